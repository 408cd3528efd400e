//! Ranks as threads of one process: the [`Exchange`] contract MPI fulfils, for tests and
//! for trying a split without MPI.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use super::ranks::Exchange;

/// Ranks as threads of one process, for tests and for trying a split without MPI:
/// `ThreadRanks::group(R)` gives R exchanges; each all-gather waits for all R.
#[derive(Debug)]
pub struct ThreadRanks {
    rank: usize,
    shared: Arc<Gathering>,
    /// Where the pieces of an open part-by-part all-to-all go.
    open: Mutex<Option<Opened>>,
    /// Splits this rank has made (every rank of a group makes the same ones).
    splits: std::sync::atomic::AtomicUsize,
}

/// An open part-by-part all-to-all: the receive buffer's address, a piece's bytes and
/// this rank's parts (byte ranges of a piece).
type Opened = (usize, usize, Vec<Range<usize>>);

/// Messages under one (to, from, tag), oldest first.
type Queue = std::collections::VecDeque<Vec<u8>>;

#[derive(Debug)]
struct Gathering {
    barrier: std::sync::Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
    /// Parts in flight, by (to, from, tag): taken by `to` when it closes.
    mail: Mutex<HashMap<(usize, usize, usize), Vec<u8>>>,
    /// Point-to-point messages in flight, by (to, from, tag), each tag's in order.
    posts: Mutex<HashMap<(usize, usize, usize), Queue>>,
    posted: Condvar,
    delivered: Condvar,
    /// The groups split from this one, by (split number, color).
    splits: Mutex<HashMap<(usize, usize), Arc<Gathering>>>,
}

impl Gathering {
    fn new(ranks: usize) -> Gathering {
        Gathering {
            barrier: std::sync::Barrier::new(ranks),
            slots: Mutex::new(vec![Vec::new(); ranks]),
            mail: Mutex::new(HashMap::new()),
            posts: Mutex::new(HashMap::new()),
            posted: Condvar::new(),
            delivered: Condvar::new(),
            splits: Mutex::new(HashMap::new()),
        }
    }
}

impl ThreadRanks {
    pub fn group(ranks: usize) -> Vec<Arc<dyn Exchange>> {
        let shared = Arc::new(Gathering::new(ranks));
        (0..ranks)
            .map(|rank| ThreadRanks::member(rank, shared.clone()))
            .collect()
    }

    fn member(rank: usize, shared: Arc<Gathering>) -> Arc<dyn Exchange> {
        Arc::new(ThreadRanks {
            rank,
            shared,
            open: Mutex::new(None),
            splits: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

impl Exchange for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.shared.slots.lock().expect("no rank panicked").len()
    }

    fn all_gather(&self, send: &[u8], recv: &mut [u8]) {
        self.shared.slots.lock().expect("no rank panicked")[self.rank] = send.to_vec();
        self.shared.barrier.wait();
        for (chunk, slot) in recv
            .chunks_mut(send.len().max(1))
            .zip(self.shared.slots.lock().expect("no rank panicked").iter())
        {
            chunk.copy_from_slice(slot);
        }
        self.shared.barrier.wait();
    }

    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) {
        self.shared.slots.lock().expect("no rank panicked")[self.rank] = send.to_vec();
        self.shared.barrier.wait();
        let slots = self.shared.slots.lock().expect("no rank panicked");
        let piece = send.len() / slots.len();
        for (chunk, slot) in recv.chunks_mut(piece.max(1)).zip(slots.iter()) {
            chunk.copy_from_slice(&slot[self.rank * piece..][..piece]);
        }
        drop(slots);
        self.shared.barrier.wait();
    }

    unsafe fn open_pieces(&self, recv: *mut u8, piece: usize, parts: &[Range<usize>]) {
        *self.open.lock().expect("no rank panicked") = Some((recv as usize, piece, parts.to_vec()));
    }

    unsafe fn send_part(&self, to: usize, tag: usize, send: *const u8, len: usize) {
        // SAFETY: the caller's contract: `len` bytes at `send`.
        let bytes = unsafe { std::slice::from_raw_parts(send, len) }.to_vec();
        let key = (to, self.rank, tag);
        let mut mail = self.shared.mail.lock().expect("no rank panicked");
        // The last step's part must have been taken first.
        while mail.contains_key(&key) {
            mail = self.shared.delivered.wait(mail).expect("no rank panicked");
        }
        mail.insert(key, bytes);
        self.shared.delivered.notify_all();
    }

    fn close_pieces(&self) {
        let ranks = self.ranks();
        let open = self.open.lock().expect("no rank panicked").take();
        let (recv, piece, parts) = open.expect("opened");
        let mut mail = self.shared.mail.lock().expect("no rank panicked");
        for from in (0..ranks).filter(|&r| r != self.rank) {
            for (tag, part) in parts.iter().enumerate() {
                let key = (self.rank, from, tag);
                while !mail.contains_key(&key) {
                    mail = self.shared.delivered.wait(mail).expect("no rank panicked");
                }
                let bytes = mail.remove(&key).expect("delivered");
                assert_eq!(bytes.len(), part.len(), "a part as long as its receive");
                let at = from * piece + part.start;
                // SAFETY: `open_pieces`' contract: R pieces of `piece` bytes at `recv`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        (recv as *mut u8).add(at),
                        bytes.len(),
                    )
                };
                self.shared.delivered.notify_all();
            }
        }
    }

    unsafe fn post_send(&self, to: usize, tag: usize, send: *const u8, len: usize) {
        // SAFETY: the caller's contract: `len` bytes at `send`.
        let bytes = unsafe { std::slice::from_raw_parts(send, len) }.to_vec();
        let mut posts = self.shared.posts.lock().expect("no rank panicked");
        posts
            .entry((to, self.rank, tag))
            .or_default()
            .push_back(bytes);
        self.shared.posted.notify_all();
    }

    fn recv(&self, from: usize, tag: usize, recv: &mut [u8]) {
        let key = (self.rank, from, tag);
        let mut posts = self.shared.posts.lock().expect("no rank panicked");
        loop {
            if let Some(bytes) = posts.get_mut(&key).and_then(|q| q.pop_front()) {
                assert_eq!(bytes.len(), recv.len(), "a message as long as its receive");
                recv.copy_from_slice(&bytes);
                return;
            }
            // A message that never comes is a bug in the schedule: fail, never hang.
            let (next, waited) = (self.shared.posted)
                .wait_timeout(posts, std::time::Duration::from_secs(120))
                .expect("no rank panicked");
            posts = next;
            assert!(
                !waited.timed_out() || posts.get(&key).is_some_and(|q| !q.is_empty()),
                "rank {}: no message from rank {from} under tag {tag} in 120 s",
                self.rank
            );
        }
    }

    fn finish_sends(&self) {}

    fn split(&self, color: usize, key: usize) -> Arc<dyn Exchange> {
        let mut mine = [0u8; 16];
        mine[..8].copy_from_slice(&(color as u64).to_le_bytes());
        mine[8..].copy_from_slice(&(key as u64).to_le_bytes());
        let mut all = vec![0u8; 16 * self.ranks()];
        self.all_gather(&mine, &mut all);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize;
        let mut members: Vec<(usize, usize)> = (all.chunks(16).enumerate())
            .filter(|(_, e)| word(&e[..8]) == color)
            .map(|(rank, e)| (word(&e[8..]), rank))
            .collect();
        members.sort();
        let rank = (members.iter().position(|&(_, r)| r == self.rank)).expect("a member");
        let number = self
            .splits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut splits = self.shared.splits.lock().expect("no rank panicked");
        let shared = splits
            .entry((number, color))
            .or_insert_with(|| Arc::new(Gathering::new(members.len())));
        ThreadRanks::member(rank, shared.clone())
    }
}

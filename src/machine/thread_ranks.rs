//! Ranks as threads of one process: the [`Exchange`] contract MPI fulfils, for tests and
//! for trying a split without MPI.

use std::sync::{Arc, Condvar, Mutex};

use super::ranks::Exchange;

/// Ranks as threads of one process, for tests and for trying a split without MPI:
/// `ThreadRanks::group(R)` gives R exchanges; each all-gather waits for all R.
#[derive(Debug)]
pub struct ThreadRanks {
    rank: usize,
    shared: Arc<Gathering>,
    /// Where the pieces of an open piece-by-piece all-to-all go (address, piece bytes).
    open: Mutex<Option<(usize, usize)>>,
}

#[derive(Debug)]
struct Gathering {
    barrier: std::sync::Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
    /// Pieces in flight: `mail[to · R + from]`, taken by `to` when it closes.
    mail: Mutex<Vec<Option<Vec<u8>>>>,
    delivered: Condvar,
}

impl ThreadRanks {
    pub fn group(ranks: usize) -> Vec<Arc<dyn Exchange>> {
        let shared = Arc::new(Gathering {
            barrier: std::sync::Barrier::new(ranks),
            slots: Mutex::new(vec![Vec::new(); ranks]),
            mail: Mutex::new(vec![None; ranks * ranks]),
            delivered: Condvar::new(),
        });
        (0..ranks)
            .map(|rank| {
                Arc::new(ThreadRanks {
                    rank,
                    shared: shared.clone(),
                    open: Mutex::new(None),
                }) as Arc<dyn Exchange>
            })
            .collect()
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

    unsafe fn open_pieces(&self, recv: *mut u8, piece: usize) {
        *self.open.lock().expect("no rank panicked") = Some((recv as usize, piece));
    }

    unsafe fn send_piece(&self, to: usize, send: *const u8) {
        let ranks = self.ranks();
        let len = self
            .open
            .lock()
            .expect("no rank panicked")
            .expect("opened")
            .1;
        // SAFETY: the caller's contract: `len` bytes at `send`.
        let bytes = unsafe { std::slice::from_raw_parts(send, len) }.to_vec();
        let mut mail = self.shared.mail.lock().expect("no rank panicked");
        // The last step's piece to `to` must have been taken first.
        while mail[to * ranks + self.rank].is_some() {
            mail = self.shared.delivered.wait(mail).expect("no rank panicked");
        }
        mail[to * ranks + self.rank] = Some(bytes);
        self.shared.delivered.notify_all();
    }

    fn close_pieces(&self) {
        let ranks = self.ranks();
        let (recv, len) = self
            .open
            .lock()
            .expect("no rank panicked")
            .take()
            .expect("opened");
        let mut mail = self.shared.mail.lock().expect("no rank panicked");
        for from in (0..ranks).filter(|&r| r != self.rank) {
            let slot = self.rank * ranks + from;
            while mail[slot].is_none() {
                mail = self.shared.delivered.wait(mail).expect("no rank panicked");
            }
            let bytes = mail[slot].take().expect("delivered");
            // SAFETY: `open_pieces`' contract: R pieces of `len` bytes at `recv`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    (recv as *mut u8).add(from * len),
                    len,
                )
            };
            self.shared.delivered.notify_all();
        }
    }
}

//! Ranks as threads of one process: the [`Exchange`] contract MPI fulfils, for tests and
//! for trying a split without MPI.

use std::sync::Arc;

use super::ranks::Exchange;

/// Ranks as threads of one process, for tests and for trying a split without MPI:
/// `ThreadRanks::group(R)` gives R exchanges; each all-gather waits for all R.
#[derive(Debug)]
pub struct ThreadRanks {
    rank: usize,
    shared: Arc<Gathering>,
}

#[derive(Debug)]
struct Gathering {
    barrier: std::sync::Barrier,
    slots: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ThreadRanks {
    pub fn group(ranks: usize) -> Vec<Arc<dyn Exchange>> {
        let shared = Arc::new(Gathering {
            barrier: std::sync::Barrier::new(ranks),
            slots: std::sync::Mutex::new(vec![Vec::new(); ranks]),
        });
        (0..ranks)
            .map(|rank| {
                Arc::new(ThreadRanks {
                    rank,
                    shared: shared.clone(),
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
}

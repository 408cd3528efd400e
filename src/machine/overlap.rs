//! The gradient exchange hidden behind backward (over ranks): each owner's piece of this
//! rank's block sum leaves as soon as backward has finished it, while the kernels of
//! the earlier layers still run.
//!
//! ```text
//!  step start      open_pieces: post the receives of every other rank's piece
//!  last pass of    after kernel k: for each owner s whose run is final at k (in the
//!  the block       fixed order `order`): the block's last additions on run s's chunks,
//!  (backward)      the run into piece s, send_piece(s); then progress()
//!  sum             close_pieces: wait; the owners' tree as before (`grad_sum.rs`)
//! ```
//!
//! A run is final after the last backward kernel that writes a gradient in it: the plan
//! fixes that kernel (`plan/overlap.rs`), so every rank sends its pieces in the same
//! order. The pieces hold
//! the same block sums the all-to-all sent (the same additions, per chunk, in the same
//! order: a chunk's additions read only that chunk), so the bits do not change. Only a
//! block run by one worker overlaps: with several, the block's sum needs the tree above
//! the workers, which waits for all of them.

use std::ops::Range;

use super::SyncPtr;
use super::chunks::Chunks;
use super::grad_sum::merge_chunks;
use super::ranks::Exchange;
use crate::plan::grads::{Merge, ROOT};
use crate::plan::owners::Owners;

/// What the last pass of a step needs to send parts as backward finishes them; shared
/// with the one worker that runs the block.
pub(super) struct Sender<'a, T> {
    pub exchange: &'a dyn Exchange,
    /// (kernel, owner, part) in sending order (`Owners::sending_order`).
    pub order: &'a [(usize, usize, usize)],
    pub owners: &'a Owners,
    /// Every chunk's floats in the parameters.
    pub chunk_floats: &'a [Range<usize>],
    pub piece: usize,
    pub chunks: Chunks<'a>,
    /// The additions the block's last shard completes (the block sum lands in ROOT).
    pub merges: &'a [Merge],
    pub grads: &'a [SyncPtr<T>],
    /// `Ranks::scatter` (R pieces to send) and `Ranks::mine` (R pieces received).
    pub scatter: SyncPtr<T>,
    pub mine: SyncPtr<T>,
}

impl<T: cllm_kernels::Real> Sender<'_, T> {
    /// Sends every part final once kernel `k` has run (`next`: the first of `order` not
    /// sent yet), then lets the transfers advance.
    ///
    /// # Safety
    /// Called by the block's one worker, in its last pass, after kernel `k`; no one else
    /// touches the gradient buffers, `scatter` or `mine` meanwhile.
    pub unsafe fn after_kernel(&self, k: usize, next: &mut usize) {
        let rank = self.exchange.rank();
        while let Some(&(_, s, j)) = self.order.get(*next).filter(|(at, ..)| *at <= k) {
            let part = &self.owners.parts[s][j];
            let to = if s == rank { &self.mine } else { &self.scatter };
            // SAFETY: piece s of `to` is ours until the exchange closes; the part's chunks
            // of every gradient buffer are final and no kernel writes them again this step.
            unsafe {
                let piece = to.0.add(s * self.piece);
                for &i in &self.owners.chunks[s][part.chunks.clone()] {
                    merge_chunks(self.chunks, i, self.merges, self.grads);
                    let floats = self.chunk_floats[i].clone();
                    let root = self.grads[ROOT].0.add(floats.start);
                    let at = piece.add(self.owners.local[i]);
                    std::ptr::copy_nonoverlapping(root, at, floats.len());
                }
                if s != rank {
                    let float = std::mem::size_of::<T>();
                    let start = piece.add(part.floats.start).cast::<u8>();
                    self.exchange
                        .send_part(s, j, start, float * part.floats.len());
                }
            }
            *next += 1;
        }
        self.exchange.progress();
    }
}

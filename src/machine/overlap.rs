//! The gradient exchange hidden behind backward (over ranks): each part of each owner's
//! piece of this rank's block sum leaves as soon as backward has finished it, while the
//! kernels of the earlier layers still run.
//!
//! ```text
//!  step start      open_pieces: post the receives of every part of this rank's piece
//!                  from every other rank
//!  each worker's   after kernel k: for each part final at k (the fixed order `order`):
//!  last pass       the worker's last additions on the part's chunks; the last worker
//!  (backward)      there adds the tree above the workers, copies the part into its
//!                  piece and send_part(owner, part); then progress()
//!  sum             close_pieces: wait; the owners' tree as before (`grad_sum.rs`)
//! ```
//!
//! A part is final after the last backward kernel that writes a gradient in it: the plan
//! fixes that kernel (`plan/overlap.rs`) and the cut into owners and parts
//! (`plan/owners.rs`), so every rank sends in the same order. The pieces hold the same
//! block sums the all-to-all sent (the same additions, per chunk, in the same order: a
//! chunk's additions read only that chunk), so the bits do not change.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::SyncPtr;
use super::chunks::Chunks;
use super::grad_sum::merge_chunks;
use super::ranks::Exchange;
use crate::plan::grads::{Merge, ROOT};
use crate::plan::owners::Owners;

/// What the last passes of a step need to send parts as backward finishes them; shared
/// by the block's workers.
pub(super) struct Sender<'a, T> {
    pub exchange: &'a dyn Exchange,
    /// (kernel, owner, part) in sending order (`Owners::sending_order`).
    pub order: &'a [(usize, usize, usize)],
    pub owners: &'a Owners,
    /// Every chunk's floats in the parameters.
    pub chunk_floats: &'a [Range<usize>],
    pub piece: usize,
    pub chunks: Chunks<'a>,
    /// The tree above the block's workers (`GradSchedule::last`), made part by part by
    /// the worker that finishes a part last.
    pub last: &'a [Merge],
    /// Workers of the block, and per part (owners' parts in order, flattened) how many
    /// have finished it.
    pub workers: usize,
    pub arrived: &'a [AtomicUsize],
    pub grads: &'a [SyncPtr<T>],
    /// `Ranks::scatter` (R pieces to send) and `Ranks::mine` (R pieces received).
    pub scatter: SyncPtr<T>,
    pub mine: SyncPtr<T>,
}

impl<T: cllm_kernels::Real> Sender<'_, T> {
    /// After kernel `k` of a worker's last pass (`next`: the first of `order` it has not
    /// finished yet): for every part now final, the worker's own last additions
    /// (`merges`) on the part's chunks; the worker that finishes a part last also makes
    /// the tree above the workers on them, copies them into the piece and sends it.
    /// Then lets the transfers advance.
    ///
    /// # Safety
    /// Called by each of the block's workers, in its last pass, after its kernel `k`,
    /// with its own merges; no one else touches the gradient buffers' final chunks,
    /// `scatter` or `mine` meanwhile.
    pub unsafe fn after_kernel(&self, k: usize, next: &mut usize, merges: &[Merge]) {
        let rank = self.exchange.rank();
        while let Some(&(_, s, j)) = self.order.get(*next).filter(|(at, ..)| *at <= k) {
            let part = &self.owners.parts[s][j];
            let list = &self.owners.chunks[s][part.chunks.clone()];
            for &i in list {
                // SAFETY: chunk i of this worker's buffers is final and its own.
                unsafe { merge_chunks(self.chunks, i, merges, self.grads) };
            }
            *next += 1;
            // The worker that finishes the part last (Release/Acquire: it sees the
            // others' additions) makes the rest.
            if self.arrived[self.owners.first_part[s] + j].fetch_add(1, Ordering::AcqRel) + 1
                < self.workers
            {
                continue;
            }
            let to = if s == rank { &self.mine } else { &self.scatter };
            // SAFETY: piece s of `to` is ours until the exchange closes; every worker
            // is done with the part's chunks, which no kernel writes again this step.
            unsafe {
                let piece = to.0.add(s * self.piece);
                for &i in list {
                    merge_chunks(self.chunks, i, self.last, self.grads);
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
        }
        self.exchange.progress();
    }
}

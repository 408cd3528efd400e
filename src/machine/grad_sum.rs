//! The gradient sum on the machine's buffers: the tree's additions the schedule
//! (`plan/grads.rs`) gives each worker after a shard, the tree above the workers'
//! blocks with each chunk's Σ g², and over ranks the exchange and the owners' tree
//! above the ranks' blocks (`ranks.rs`). Every addition is the chunk step `Sum +=
//! Addend`, compiled or through the reference alike (`chunks.rs`).

use rayon::prelude::*;

use cllm_kernels::Real;

use super::chunks::{ChunkStep, Chunks};
use super::{Machine, SyncPtr};
use crate::plan::grads::{Merge, ROOT};
use crate::plan::optimizer::{State, StateSlice};

/// Where a pair's two slots are: `sum` and `addend` at the chunk.
fn pair_slots<'a, T>(
    sum: &'a SyncPtr<T>,
    addend: &'a SyncPtr<T>,
) -> impl Fn(&StateSlice) -> *mut T + 'a {
    move |slice| {
        let base = match slice.state {
            State::Sum => sum,
            State::Addend(0) => addend,
            state => unreachable!("a pair reads no {state:?}"),
        };
        base.0.wrapping_add(slice.offset)
    }
}

/// Merge `m` of the gradient buffers `grads` on chunk `i`; returns Σ g² of its sum.
///
/// # Safety
/// No one else touches chunk `i` of the merge's buffers meanwhile.
unsafe fn merge<T: Real>(chunks: Chunks<'_>, i: usize, m: &Merge, grads: &[SyncPtr<T>]) -> f64 {
    let which = match m.addends.len() {
        1 => ChunkStep::Pair,
        _ => ChunkStep::Group,
    };
    // A pipeline stage's packed buffers hold only its chunks.
    let shift = match chunks.shifts.map(|s| s[i]) {
        None => 0,
        Some(Some(shift)) => shift,
        Some(None) => return 0.0, // a chunk this stage never writes
    };
    let at = |slice: &StateSlice| {
        let buffer = match slice.state {
            State::Sum => m.sum,
            State::Addend(k) => m.addends[k],
            state => unreachable!("a gradient sum reads no {state:?}"),
        };
        grads[buffer]
            .0
            .wrapping_add(slice.offset.wrapping_add_signed(shift))
    };
    // SAFETY: distinct buffers (the schedule's) at one chunk; forwarded to the caller.
    unsafe { chunks.run(which, i, at) }
}

/// Makes `merges`, in order, on parameter chunk `i`.
///
/// # Safety
/// No one else touches chunk `i` of the merged buffers meanwhile.
pub(super) unsafe fn merge_chunks<T: Real>(
    chunks: Chunks<'_>,
    i: usize,
    merges: &[Merge],
    grads: &[SyncPtr<T>],
) {
    for m in merges {
        // SAFETY: forwarded to the caller.
        unsafe { merge(chunks, i, m, grads) };
    }
}

/// Makes `merges`, in order, on every parameter chunk (chunk by chunk, on this thread:
/// a chunk's additions run while it is in cache).
///
/// # Safety
/// No one else touches the merged buffers meanwhile.
pub(super) unsafe fn add_all<T: Real>(chunks: Chunks<'_>, merges: &[Merge], grads: &[SyncPtr<T>]) {
    if merges.is_empty() {
        return;
    }
    for i in 0..chunks.steps.len() {
        for m in merges {
            // SAFETY: forwarded to the caller.
            unsafe { merge(chunks, i, m, grads) };
        }
    }
}

impl<T: Real> Machine<T> {
    /// Finishes the gradient sum once every shard is done: the tree above the workers'
    /// blocks, chunk by chunk in parallel, recording each chunk's Σ g² (the last
    /// addition returns it, or a pass of its own when no addition is left). Over
    /// ranks: the exchange and the tree above the ranks' blocks.
    pub(super) fn sum_shard_grads(&mut self) {
        if self.ranks.is_some() {
            return self.sum_over_ranks();
        }
        let pool = std::sync::Arc::clone(&self.pool);
        let chunks = Chunks::of(&self.plan, &self.program);
        let (last, grads) = (&self.schedule.last, &self.grad_ptrs);
        pool.install(|| {
            (self.chunk_squares.par_iter_mut().enumerate()).for_each(|(i, squares)| {
                // SAFETY: each task takes one chunk of the buffers; the workers are done.
                *squares = unsafe { chunk_tree(chunks, i, last, grads) };
            })
        });
    }

    /// Over ranks: this rank's block sum (buffer ROOT) cut into the owners' pieces and
    /// exchanged (all-to-all); the owner's tree over the R block sums of each of its
    /// chunks; every chunk's Σ g² to every rank (all-gather); the owner's totals into
    /// buffer ROOT, where AdamW (run by the owner alone) reads them. The rest of the
    /// summed gradient is the other owners' business.
    pub(super) fn sum_over_ranks(&mut self) {
        let pool = std::sync::Arc::clone(&self.pool);
        let chunks = Chunks::of(&self.plan, &self.program);
        let Machine {
            ranks,
            chunk_squares,
            grads,
            ..
        } = self;
        let ranks = ranks.as_mut().expect("split over ranks");
        // A block run by several workers: the tree above their parts first, so the
        // block's sum is in buffer ROOT (its Σ g² is the owners' to take).
        let (last, grad_ptrs) = (&self.schedule.last, &self.grad_ptrs);
        // (Overlapped, the workers made it part by part: `overlap.rs`.)
        if !last.is_empty() && !ranks.in_flight {
            pool.install(|| {
                (0..chunks.steps.len()).into_par_iter().for_each(|i| {
                    // SAFETY: each task takes one chunk of the buffers; the workers are done.
                    unsafe { chunk_tree(chunks, i, last, grad_ptrs) };
                })
            });
        }
        let (rank, count, piece) = (ranks.exchange.rank(), ranks.exchange.ranks(), ranks.piece);
        let started = std::time::Instant::now();
        if std::mem::take(&mut ranks.in_flight) {
            // Sent while backward ran (`overlap.rs`): what is left of it.
            ranks.exchange.close_pieces();
        } else {
            for (s, list) in ranks.owners.chunks.iter().enumerate() {
                for &i in list {
                    let (floats, at) = (ranks.chunk_floats[i].clone(), ranks.owners.local[i]);
                    let to = &mut ranks.scatter[s * piece + at..][..floats.len()];
                    to.copy_from_slice(&grads[ROOT][floats]);
                }
            }
            let (send, recv) = (&ranks.scatter, &mut ranks.mine);
            (ranks.exchange).all_to_all(
                super::ranks::bytes_of(send),
                super::ranks::bytes_of_mut(recv),
            );
        }
        ranks.all_to_all_seconds += started.elapsed().as_secs_f64();
        let own = &ranks.owners.chunks[rank];
        let (local, starts) = (&ranks.owners.local, &ranks.chunk_starts);
        let mine = SyncPtr(ranks.mine.as_mut_ptr());
        pool.install(|| {
            (ranks.squares_out[..own.len()].par_iter_mut().zip(own)).for_each(|(squares, &i)| {
                // Rank r's block sum of chunk i is in piece r of `mine`, at local[i].
                let at = (local[i], starts[i]);
                // SAFETY: each task takes one chunk of every piece.
                *squares = unsafe { owners_tree(chunks, i, &mine, piece, at, count) };
            })
        });
        let (out, into) = (&ranks.squares_out, &mut ranks.squares_in);
        (ranks.exchange).all_gather(
            super::ranks::bytes_of(out),
            super::ranks::bytes_of_mut(into),
        );
        ranks.exchange_seconds += started.elapsed().as_secs_f64();
        let peers = (count - 1) as u64;
        let squares = 8 * ranks.squares_out.len();
        ranks.sent_bytes += peers * (piece * std::mem::size_of::<T>() + squares) as u64;
        let most = ranks.squares_out.len();
        for (s, list) in ranks.owners.chunks.iter().enumerate() {
            for (j, &i) in list.iter().enumerate() {
                chunk_squares[i] = ranks.squares_in[s * most + j];
            }
        }
        for &i in own {
            let floats = ranks.chunk_floats[i].clone();
            let at = ranks.owners.local[i];
            grads[ROOT][floats.clone()].copy_from_slice(&ranks.mine[at..][..floats.len()]);
        }
    }
}

/// The additions `last` on chunk `i`; returns the root's Σ g².
///
/// # Safety
/// No one else touches chunk `i` of the buffers meanwhile.
pub(super) unsafe fn chunk_tree<T: Real>(
    chunks: Chunks<'_>,
    i: usize,
    last: &[Merge],
    grads: &[SyncPtr<T>],
) -> f64 {
    if last.is_empty() {
        let root = pair_slots(&grads[ROOT], &grads[ROOT]);
        // SAFETY: forwarded to the caller.
        return unsafe { chunks.run(ChunkStep::Squares, i, root) };
    }
    let mut squares = 0.0;
    for m in last {
        // SAFETY: forwarded to the caller.
        squares = unsafe { merge(chunks, i, m, grads) };
    }
    squares
}

/// The tree over the R block sums of chunk `i`, piece r of `mine` (each `piece` floats)
/// holding rank r's at float `at.0` of the piece (the chunk starts at float `at.1` of
/// the parameters): `piece[s] += piece[s + stride]`, stride 1, 2, 4, … — the single
/// process's tree above the blocks. Returns the total's Σ g² (the total lands in piece 0).
///
/// # Safety
/// No one else touches chunk `i` of the pieces meanwhile.
unsafe fn owners_tree<T: Real>(
    chunks: Chunks<'_>,
    i: usize,
    mine: &SyncPtr<T>,
    piece: usize,
    (local, start): (usize, usize),
    ranks: usize,
) -> f64 {
    let at_piece = |r: usize| SyncPtr(mine.0.wrapping_add(r * piece + local).wrapping_sub(start));
    let mut squares = None;
    let mut stride = 1;
    while stride < ranks {
        for s in (0..ranks - stride).step_by(2 * stride) {
            let (sum, addend) = (at_piece(s), at_piece(s + stride));
            // SAFETY: two distinct pieces at one chunk; forwarded to the caller.
            squares = Some(unsafe { chunks.run(ChunkStep::Pair, i, pair_slots(&sum, &addend)) });
        }
        stride *= 2;
    }
    squares.unwrap_or_else(|| {
        let total = at_piece(0);
        // SAFETY: as above.
        unsafe { chunks.run(ChunkStep::Squares, i, pair_slots(&total, &total)) }
    })
}

//! One step across processes (data parallelism over MPI ranks, or any [`Exchange`]),
//! with the same bits as one process.
//!
//! Rank r of R owns the contiguous block of b = S/R shards [r·b, (r+1)·b). The
//! single-process step sums the S shard gradients in a fixed binary tree (`g[s] +=
//! g[s + stride]`, stride 1, 2, 4, …). When b is a power of two, each block is a whole
//! subtree of that tree, so:
//!
//! 1. each rank runs its own shards and adds its subtree as they finish
//!    (`plan/grads.rs`): the subtree's sum, the same bits the single process has at
//!    the subtree's root;
//! 2. the parameter chunks are dealt to R owners (`plan/owners.rs`: ~P/R floats each,
//!    cut by when backward finishes them); each rank sends its subtree sum's piece of
//!    owner s's chunks to rank s (one all-to-all, or part by part while backward runs:
//!    `overlap.rs`), so rank s holds every rank's subtree sum of its own chunks;
//! 3. the owner runs the tree above the blocks on its own chunks — the tree over the
//!    R subtree sums, which adds exactly what the single process adds above the blocks,
//!    in the same order — and the same kernel computes the same Σ g² per chunk for
//!    clipping;
//! 4. every rank learns every chunk's Σ g² (a small all-gather), so the clipping norm;
//!    each owner runs AdamW on its chunks (`Machine::adamw`), and the updated parameters
//!    travel back by all-gather — the bytes the gradient totals would take.
//!
//! Each rank sends (R − 1)/R of the gradient in each collective: 2(R − 1)/R × 4P bytes
//! per step whatever R, where gathering every rank's whole subtree sum sent (R − 1) ×
//! 4P. Not `MPI_Allreduce` or `MPI_Reduce_scatter`: MPI may reorder their additions,
//! and then the bits would depend on R. Both back ends exchange alike.
//!
//! Losses of the shards (f64, per micro-batch and shard) are all-gathered too and added
//! in the single process's order.

use std::ops::Range;
use std::sync::Arc;

use crate::plan::ParamChunk;
use crate::plan::owners::Owners;

/// The collectives among the ranks of one run.
pub trait Exchange: Send + Sync + std::fmt::Debug {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// How many ranks there are.
    fn ranks(&self) -> usize;
    /// Every rank's `send` (the same length on each), in rank order, into `recv`
    /// (`ranks() × send.len()` bytes).
    fn all_gather(&self, send: &[u8], recv: &mut [u8]);
    /// `send` holds `ranks()` pieces of equal length: piece s goes to rank s, and piece
    /// r of `recv` (as long as `send`) arrives from rank r.
    fn all_to_all(&self, send: &[u8], recv: &mut [u8]);
    /// The all-to-all part by part, while the step runs (the exchange overlapped with
    /// backward): `open_pieces` posts the receives of every other rank's piece into
    /// `recv` (piece r at `r × piece` bytes), cut into this rank's `parts` (byte ranges
    /// of its piece, each one message, tagged by its index); `send_part` starts sending
    /// one part of rank `to`'s piece as soon as it is final; `progress` lets transfers
    /// advance between kernels; `close_pieces` waits for every send and receive. Every
    /// rank opens, sends every part of its R − 1 other pieces and closes in the same
    /// step; the bytes are the all-to-all's.
    ///
    /// # Safety
    /// `recv` (R × `piece` bytes) and every part sent stay valid, unmoved and untouched
    /// by anyone else until `close_pieces` returns.
    unsafe fn open_pieces(&self, recv: *mut u8, piece: usize, parts: &[Range<usize>]);
    /// # Safety
    /// As [`Exchange::open_pieces`]: `len` bytes at `send`, part `tag` of rank `to`'s
    /// piece (`to` ≠ this rank).
    unsafe fn send_part(&self, to: usize, tag: usize, send: *const u8, len: usize);
    /// Lets the transfers in flight advance (MPI progresses only inside its calls).
    fn progress(&self) {}
    /// Waits for every piece sent and received since `open_pieces`.
    fn close_pieces(&self);
    /// Point to point, between pipeline stages: starts sending `len` bytes at `send`
    /// to rank `to` under `tag` and returns at once. Messages from one rank to another
    /// under one tag arrive in the order sent.
    ///
    /// # Safety
    /// The bytes stay valid and untouched until [`Exchange::finish_sends`] returns.
    unsafe fn post_send(&self, to: usize, tag: usize, send: *const u8, len: usize);
    /// Receives the message rank `from` sent under `tag` (exactly `recv.len()` bytes);
    /// waits for it.
    fn recv(&self, from: usize, tag: usize, recv: &mut [u8]);
    /// Waits until every message posted by [`Exchange::post_send`] has left.
    fn finish_sends(&self);
    /// The ranks that give the same `color`, as an exchange of their own, ranked by
    /// `key` (then by rank here). Every rank calls it at the same point.
    fn split(&self, color: usize, key: usize) -> Arc<dyn Exchange>;
    /// Ends every rank with `code` (a rank that stops alone would leave the others
    /// waiting in the next exchange). Threads of one process end the process.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Whether `flag` is set on any rank (every rank must ask at the same point).
pub fn any_rank(exchange: &dyn Exchange, flag: bool) -> bool {
    let mut all = [0u8; 1024];
    let n = exchange.ranks();
    if n > all.len() {
        let mut all = vec![0u8; n];
        exchange.all_gather(&[flag as u8], &mut all);
        return all.contains(&1);
    }
    exchange.all_gather(&[flag as u8], &mut all[..n]);
    all[..n].contains(&1)
}

/// What every rank learned from [`agree`]: the same thing on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// No rank failed and every rank gave the same fingerprint.
    Same,
    /// This rank failed; `speaks` on the lowest rank that failed with the same message
    /// (each distinct message is printed once).
    Failed { speaks: bool },
    /// This rank was fine, but `rank` (the lowest) failed.
    OtherFailed { rank: usize },
    /// Every rank was fine, but `rank` (the lowest) gave another fingerprint than rank 0.
    Mismatch { rank: usize },
}

/// One all-gather every rank makes at the same point whether or not it failed before
/// it: each sends a hash of its failure's message (`None`: it did not fail) and a
/// fingerprint of what it is about to run. Afterwards every rank knows the same thing,
/// so all can stop together, each with exit 1 and MPI finalized, instead of one rank
/// leaving while the others wait in an exchange that never completes (a hang), or
/// aborting the job (whose launcher may tear it down before forwarding the reason).
pub fn agree(exchange: &dyn Exchange, failure: Option<&str>, fingerprint: u64) -> Agreement {
    use std::hash::{Hash, Hasher};
    let failure = failure.map_or(0, |text| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish().max(1) // 0 means "no failure"
    });
    let mut mine = [0u8; 16];
    mine[..8].copy_from_slice(&failure.to_le_bytes());
    mine[8..].copy_from_slice(&fingerprint.to_le_bytes());
    let n = exchange.ranks();
    let mut all = vec![0u8; 16 * n];
    exchange.all_gather(&mine, &mut all);
    let word = |rank: usize, at: usize| {
        u64::from_le_bytes(all[16 * rank + at..][..8].try_into().expect("8 bytes"))
    };
    if failure != 0 {
        let first = (0..n).find(|&r| word(r, 0) == failure);
        return Agreement::Failed {
            speaks: first == Some(exchange.rank()),
        };
    }
    if let Some(rank) = (0..n).find(|&r| word(r, 0) != 0) {
        return Agreement::OtherFailed { rank };
    }
    match (0..n).find(|&r| word(r, 8) != word(0, 8)) {
        Some(rank) => Agreement::Mismatch { rank },
        None => Agreement::Same,
    }
}

/// The rank counts `shards` can be split over: R divides S and S/R is a power of two
/// (a block of shards must be a whole subtree of the sum).
pub fn rank_counts(shards: usize) -> Vec<usize> {
    (1..=shards)
        .filter(|&r| shards.is_multiple_of(r) && (shards / r).is_power_of_two())
        .collect()
}

/// Why a machine cannot run on this many ranks.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{ranks} ranks cannot split the plan's {shards} shards into equal power-of-two blocks")]
#[diagnostic(
    code(cllm::ranks),
    help(
        "run on {counts} ranks: `plan.shards` fixes which (the shard count never follows the rank count, so results do not change with it)"
    )
)]
pub struct RankError {
    pub ranks: usize,
    pub shards: usize,
    /// The rank counts that would do, e.g. "1, 2, 4 or 8".
    pub counts: String,
}

impl RankError {
    pub fn new(ranks: usize, shards: usize) -> RankError {
        RankError {
            ranks,
            shards,
            counts: or_list(&rank_counts(shards), 1),
        }
    }
}

/// `counts` as "1, 2, 4 or 8" (`none` when empty).
pub(super) fn or_list(counts: &[usize], none: usize) -> String {
    let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
    match counts.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => none.to_string(),
    }
}

/// A machine's place among the ranks, and the buffers of its exchange (sized once).
pub(super) struct Ranks<T> {
    pub exchange: Arc<dyn Exchange>,
    /// The shards this rank runs.
    pub own: Range<usize>,
    /// Shards per rank (b).
    pub block: usize,
    /// The parameter chunks each rank owns, where each is in its owner's piece, and
    /// the pieces' parts (`plan/owners.rs`).
    pub owners: Owners,
    /// Where each chunk is held in the parameters and gradient buffers (the plan's
    /// chunks; a pipeline stage's packed ones, `Ranks::of_stage`).
    pub chunk_floats: Vec<Range<usize>>,
    /// Each chunk's offset in the whole model's parameters (where its chunk steps
    /// address it).
    pub chunk_starts: Vec<usize>,
    /// Floats of the largest piece: the length of every piece exchanged.
    pub piece: usize,
    /// This rank's subtree sum cut into the R owners' pieces (R × piece).
    pub scatter: Vec<T>,
    /// Every rank's subtree sum of this rank's chunks (R × piece); the owner's tree
    /// leaves the total in piece 0. Once that is copied out, the same buffer receives
    /// every owner's updated chunks ([`Ranks::gather_owned`]): the two never overlap.
    pub mine: Vec<T>,
    /// Σ g² of this rank's chunks (padded to the most chunks a rank owns), and every
    /// rank's.
    pub squares_out: Vec<f64>,
    pub squares_in: Vec<f64>,
    pub losses_out: Vec<f64>,
    pub losses_in: Vec<f64>,
    /// Send each piece's parts as backward finishes them (`plan.overlap`): (kernel after
    /// which final, owner, part), in sending order ([`Owners::sending_order`]). Empty:
    /// the all-to-all after the step.
    pub order: Vec<(usize, usize, usize)>,
    /// Whether this step's pieces are in flight (opened by the step, closed by the sum).
    pub in_flight: bool,
    /// This rank's parts as byte ranges of its piece (what `open_pieces` is given).
    pub part_bytes: Vec<Range<usize>>,
    /// Per part of every owner (flattened, `Owners::first_part`): how many of the
    /// block's workers have finished it this step (`overlap.rs`).
    pub arrived: Vec<std::sync::atomic::AtomicUsize>,
    /// Seconds the gradient all-to-all kept this rank waiting after its compute: all of
    /// it without overlap, only what backward did not hide with it.
    pub all_to_all_seconds: f64,
    /// Seconds spent in the collectives (waiting for the slowest rank included).
    pub exchange_seconds: f64,
    /// Bytes this rank has sent to other ranks.
    pub sent_bytes: u64,
}

impl<T> Ranks<T> {
    /// Σ loss of the step's passes in the single process's (micro-batch, shard) order,
    /// from every rank's `losses_out` (its own shards' losses in that order): one
    /// all-gather.
    pub fn total_loss(&mut self, micro_batches: usize) -> f64 {
        let count = self.exchange.ranks();
        let (block, shards) = (self.block, self.block * count);
        self.losses_in.resize(count * self.losses_out.len(), 0.0);
        let recv_bytes = bytes_of_mut(&mut self.losses_in);
        let started = std::time::Instant::now();
        (self.exchange).all_gather(bytes_of(&self.losses_out), recv_bytes);
        self.sent_bytes += ((count - 1) * 8 * self.losses_out.len()) as u64;
        self.exchange_seconds += started.elapsed().as_secs_f64();
        // Rank r sent its shards' losses in (micro-batch, shard) order.
        let per_rank = self.losses_out.len();
        let mut total = 0.0;
        for pass in 0..micro_batches * shards {
            let (a, s) = (pass / shards, pass % shards);
            let (r, within) = (s / block, s % block);
            total += self.losses_in[r * per_rank + a * block + within];
        }
        total
    }
}

impl<T: cllm_kernels::Real> Ranks<T> {
    /// The split of `shards` over `exchange`'s ranks, and the exchange's buffers:
    /// two of R pieces (≈ 2P floats in all, whatever R) and the chunks' Σ g².
    pub fn new(
        exchange: Arc<dyn Exchange>,
        shards: usize,
        chunks: &[ParamChunk],
        final_kernels: &[usize],
    ) -> Result<Self, RankError> {
        Ranks::of_stage(exchange, shards, chunks, final_kernels, None)
    }

    /// [`Ranks::new`] for the replicas of a pipeline stage, given `held`: per chunk,
    /// how far the stage's packed parameters and gradients moved it (`None`: another
    /// stage finishes it). The replicas own and exchange only the chunks it finishes.
    pub fn of_stage(
        exchange: Arc<dyn Exchange>,
        shards: usize,
        chunks: &[ParamChunk],
        final_kernels: &[usize],
        held: Option<&[Option<isize>]>,
    ) -> Result<Self, RankError> {
        let (rank, ranks) = (exchange.rank(), exchange.ranks());
        if !rank_counts(shards).contains(&ranks) {
            return Err(RankError::new(ranks, shards));
        }
        let block = shards / ranks;
        let shift = |i: usize| held.map_or(Some(0), |h| h[i]);
        let owners = Owners::of_some(chunks, final_kernels, ranks, |i| shift(i).is_some());
        let total_parts = owners.parts.iter().map(Vec::len).sum();
        let piece = owners.piece(chunks);
        let most = owners.chunks.iter().map(Vec::len).max().unwrap_or(0);
        let pieces = || vec![T::default(); ranks * piece];
        // This rank's parts as byte ranges of its piece: what its receives are cut into.
        let float = std::mem::size_of::<T>();
        let part_bytes = (owners.parts[rank].iter())
            .map(|p| float * p.floats.start..float * p.floats.end)
            .collect();
        Ok(Ranks {
            exchange,
            own: rank * block..(rank + 1) * block,
            block,
            owners,
            chunk_floats: (chunks.iter().enumerate())
                .map(|(i, c)| {
                    let at = c.offset.wrapping_add_signed(shift(i).unwrap_or(0));
                    at..at + c.len
                })
                .collect(),
            chunk_starts: chunks.iter().map(|c| c.offset).collect(),
            piece,
            scatter: pieces(),
            mine: pieces(),
            squares_out: vec![0.0; most],
            squares_in: vec![0.0; ranks * most],
            losses_out: Vec::new(),
            losses_in: Vec::new(),
            order: Vec::new(),
            in_flight: false,
            part_bytes,
            arrived: (0..total_parts).map(|_| Default::default()).collect(),
            all_to_all_seconds: 0.0,
            exchange_seconds: 0.0,
            sent_bytes: 0,
        })
    }
}

impl<T: cllm_kernels::Real> Ranks<T> {
    /// Floats of this rank's own piece (its chunks, packed in piece order).
    pub fn own_len(&self) -> usize {
        let me = self.exchange.rank();
        (self.owners.chunks[me].iter())
            .map(|&i| self.chunk_floats[i].len())
            .sum()
    }

    /// Every owner's chunks of `state` (P floats, current on each owner's chunks; `own`
    /// holds this rank's, packed as its piece, or is None to take them from `state`)
    /// to every rank: one all-gather of a piece from each, received in `mine` (free
    /// once the gradient exchange has copied its totals out).
    pub fn gather_owned(&mut self, state: &mut [T], own: Option<&[T]>) {
        let (rank, piece) = (self.exchange.rank(), self.piece);
        for &i in &self.owners.chunks[rank] {
            let (floats, at) = (self.chunk_floats[i].clone(), self.owners.local[i]);
            let from = match own {
                Some(own) => &own[at..at + floats.len()],
                None => &state[floats.clone()],
            };
            self.scatter[at..at + floats.len()].copy_from_slice(from);
        }
        let started = std::time::Instant::now();
        let send = bytes_of(&self.scatter[..piece]);
        self.exchange.all_gather(send, bytes_of_mut(&mut self.mine));
        self.exchange_seconds += started.elapsed().as_secs_f64();
        self.sent_bytes += ((self.exchange.ranks() - 1) * send.len()) as u64;
        for (s, list) in self.owners.chunks.iter().enumerate() {
            for &i in list {
                let (floats, at) = (self.chunk_floats[i].clone(), self.owners.local[i]);
                state[floats.clone()].copy_from_slice(&self.mine[s * piece + at..][..floats.len()]);
            }
        }
    }
}

/// `values` as bytes (f32 and f64 are plain data: every byte pattern is a value).
pub(super) fn bytes_of<T: cllm_kernels::Real>(values: &[T]) -> &[u8] {
    // SAFETY: T is f32 or f64 (Real); the slice covers exactly the values' bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

/// `values` as bytes to write (f32 and f64 take any byte pattern).
pub(super) fn bytes_of_mut<T: cllm_kernels::Real>(values: &mut [T]) -> &mut [u8] {
    let len = std::mem::size_of_val(values);
    // SAFETY: T is f32 or f64 (Real): every byte pattern is a valid value.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), len) }
}

#[cfg(test)]
mod tests {
    use super::rank_counts;

    #[test]
    fn blocks_are_power_of_two_subtrees() {
        assert_eq!(rank_counts(8), [1, 2, 4, 8]);
        assert_eq!(rank_counts(6), [3, 6]);
        assert_eq!(rank_counts(12), [3, 6, 12]);
        assert_eq!(rank_counts(1), [1]);
    }
}

//! A step on every core, with the same bits on any number of threads.
//!
//! ```text
//!  panels ──▶ (bf16) each weight rounded into its panels, if the parameters changed
//!  shards ──▶ worker w runs shards w, w+W, …: zero the shard's gradients, then forward
//!             + backward of that shard of every micro-batch, accumulating into them
//!  chunks ──▶ per parameter chunk (in parallel): tree sum of the shard gradients into
//!             shard 0's buffer, and the chunk's Σ g²; the norm adds chunks in order
//!  chunks ──▶ per parameter chunk (in parallel): AdamW
//! ```
//!
//! Why the bits do not depend on threads: a shard's gradient depends only on its own
//! tokens (kernels overwrite or zero what they read from the arena; the planner's
//! poisoning test checks it), the shard sum is a fixed tree over shard indices, the
//! norm a fixed order over chunks, and losses are added in (micro-batch, shard) order.
//! With fewer shards than threads, each worker's GEMMs split their output rows and
//! columns over the spare threads, which leaves every element's sum in the same order.
//! The hot path takes no lock and allocates nothing: rayon forks with stack jobs when
//! called from inside the machine's pool, and every table is built before the first step.

use rayon::prelude::*;

use cllm_kernels::Real;
use cllm_kernels::adamw::AdamWStep;
use cllm_kernels::jit::KernelFn;
use cllm_kernels::reference::{Buf, Scalars, run_step};

use super::{Machine, SyncPtr};
use crate::data::Batch;
use crate::plan::Phase;
use crate::plan::ir::Step;
use crate::plan::optimizer::{State, StateSlice};

impl<T: Real> Machine<T> {
    /// Forward and backward of every shard of every micro-batch (each `batch` holds
    /// `shards` shards of B·T tokens), then the tree sum of the shard gradients;
    /// returns Σ loss over scored targets. `loss_scale` is the step's 1/(scored targets).
    pub fn forward_backward(&mut self, batches: &[Batch], loss_scale: f64) -> f64 {
        let loss = self.run_shards(batches, loss_scale, true);
        self.sum_shard_grads();
        loss
    }

    /// Forward only, over every shard of one batch (evaluation); returns Σ loss.
    pub fn forward_batch(&mut self, batch: &Batch) -> f64 {
        self.run_shards(std::slice::from_ref(batch), 0.0, false)
    }

    fn run_shards(&mut self, batches: &[Batch], loss_scale: f64, backward: bool) -> f64 {
        self.refresh_panels();
        let (shards, workers) = (self.plan.shards, self.plan.workers);
        let own = self.own_shards();
        let gemm_threads = (self.plan.threads / workers).max(1);
        let dims = self.plan.graph.dims;
        let shard_len = dims.rows();
        let passes = batches.len() * shards;
        let pool = std::sync::Arc::clone(&self.pool);
        let (shared, worker_list) = self.split();
        pool.install(|| {
            worker_list
                .par_iter_mut()
                .enumerate()
                .for_each(|(w, worker)| {
                    cllm_kernels::gemm::sgemm::set_gemm_threads(gemm_threads);
                    if worker.losses.len() < passes {
                        worker.losses.resize(passes, 0.0); // the first step only
                    }
                    for (local, s) in (own.start + w..own.end).step_by(workers).enumerate() {
                        if backward {
                            // SAFETY: shard s is run by this worker alone.
                            unsafe { shared.shard_grads[s].slice(shared.grads_len) }
                                .fill(T::default());
                        }
                        for (a, batch) in batches.iter().enumerate() {
                            let rows = s * shard_len..(s + 1) * shard_len;
                            worker.tokens.copy_from_slice(&batch.tokens[rows.clone()]);
                            worker.targets.copy_from_slice(&batch.targets[rows]);
                            let forward = |p| p == Phase::Forward;
                            let loss = worker.run(&shared, s, local, forward, loss_scale);
                            if backward {
                                worker.run(&shared, s, local, |p| !forward(p), loss_scale);
                            }
                            worker.losses[a * shards + s] = loss;
                        }
                    }
                });
        });
        // Σ loss in (micro-batch, shard) order, whichever worker (or rank) ran a shard.
        // Worker w ran the rank's shards own.start + w, + 2w, …
        let loss_of = |list: &[super::worker::Worker<T>], pass: usize| {
            list[(pass % shards - own.start) % workers].losses[pass]
        };
        let mut total = 0.0;
        match &mut self.ranks {
            None => {
                for pass in 0..passes {
                    total += loss_of(&self.workers, pass);
                }
            }
            Some(ranks) => {
                let block = ranks.block;
                ranks.losses_out.clear();
                for pass in (0..passes).filter(|p| own.contains(&(p % shards))) {
                    ranks.losses_out.push(loss_of(&self.workers, pass));
                }
                let count = ranks.exchange.ranks();
                ranks.losses_in.resize(count * ranks.losses_out.len(), 0.0);
                let recv_bytes = super::ranks::bytes_of_mut(&mut ranks.losses_in);
                let started = std::time::Instant::now();
                (ranks.exchange).all_gather(super::ranks::bytes_of(&ranks.losses_out), recv_bytes);
                ranks.sent_bytes += ((count - 1) * 8 * ranks.losses_out.len()) as u64;
                ranks.exchange_seconds += started.elapsed().as_secs_f64();
                // Rank r sent its shards' losses in (micro-batch, shard) order.
                let per_rank = ranks.losses_out.len();
                for pass in 0..passes {
                    let (a, s) = (pass / shards, pass % shards);
                    let (r, within) = (s / block, s % block);
                    total += ranks.losses_in[r * per_rank + a * block + within];
                }
            }
        }
        total
    }

    /// Makes the weights' bf16 panels from the parameters if these changed since
    /// (bf16 mode; JIT only: the reference rounds inside its products). Called before
    /// every step that reads them; each weight's kernel splits its panels over the
    /// pool.
    pub(super) fn refresh_panels(&mut self) {
        let Some(bound) = &self.program else { return };
        if !std::mem::take(&mut self.panels_stale) {
            return;
        }
        let kernels = &bound.program.panels;
        self.pool.install(|| {
            for (kernel, table) in kernels.iter().zip(&bound.panel_tables) {
                // SAFETY: the table points at a weight and its two panel tensors, sized
                // by the plan the kernel was compiled from; no step runs meanwhile.
                unsafe { kernel(table.0.as_ptr(), [0.0].as_ptr()) };
            }
        });
    }

    /// Sums every shard's gradient into shard 0's in the fixed tree, chunk by chunk in
    /// parallel, recording each chunk's Σ g². Over ranks: the subtree sums, exchanged,
    /// then the tree above them (`ranks.rs`).
    fn sum_shard_grads(&mut self) {
        let Some(ranks) = &mut self.ranks else {
            return self.tree_sum();
        };
        if ranks.tables.is_some() {
            return self.sum_over_ranks_compiled();
        }
        // The interpreter: the other ranks' buffers filled with −0.0, the whole tree run
        // twice (simple, and only for tests and the reference back end).
        let (own, block, len) = (ranks.own.clone(), ranks.block, self.params.len());
        let minus_zero = T::from_f64(-0.0);
        for (s, g) in self.shard_grads.iter_mut().enumerate() {
            if !own.contains(&s) {
                g.fill(minus_zero);
            }
        }
        self.tree_sum();
        let ranks = self.ranks.as_mut().expect("split over ranks");
        if ranks.sums.is_empty() {
            // Sized on the first step (the reference back end may allocate).
            ranks.sums = vec![T::default(); ranks.exchange.ranks() * len];
        }
        let started = std::time::Instant::now();
        let send = super::ranks::bytes_of(&self.shard_grads[0]);
        (ranks.exchange).all_gather(send, super::ranks::bytes_of_mut(&mut ranks.sums));
        ranks.exchange_seconds += started.elapsed().as_secs_f64();
        ranks.sent_bytes += ((ranks.exchange.ranks() - 1) * send.len()) as u64;
        for (s, g) in self.shard_grads.iter_mut().enumerate() {
            if s.is_multiple_of(block) {
                g.copy_from_slice(&ranks.sums[(s / block) * len..][..len]);
            } else {
                g.fill(minus_zero);
            }
        }
        self.tree_sum();
    }

    /// The compiled tree over ranks (`ranks.rs`): pass 1 over this rank's shards (the
    /// others' read as a chunk of −0.0); each owner's run of every rank's subtree sum by
    /// all-to-all; pass 2 over the owner's chunks; their Σ g² to every rank by
    /// all-gather (the totals stay with the owner, whose AdamW reads them).
    fn sum_over_ranks_compiled(&mut self) {
        let pool = std::sync::Arc::clone(&self.pool);
        let Machine {
            ranks,
            program,
            chunk_squares,
            shard_grads,
            ..
        } = self;
        let super::ranks::Ranks {
            exchange,
            partial,
            tables,
            runs,
            spans,
            piece,
            scatter,
            mine,
            squares_out,
            squares_in,
            exchange_seconds,
            sent_bytes,
            ..
        } = ranks.as_mut().expect("split over ranks");
        let bound = program.as_ref().expect("compiled");
        let (first, second) = tables.as_ref().expect("tables bound");
        let kernels = &bound.program.shard_sum;
        // Shard 0 belongs to another rank: this rank's sum goes to `partial`, which the
        // tree also reads as shard 0's (−0.0) input.
        partial.fill(T::from_f64(-0.0));
        run_compiled_chunks(&pool, kernels, first, &[0.0], chunk_squares);
        let subtree = if partial.is_empty() {
            &shard_grads[0]
        } else {
            &*partial
        };
        let (rank, count, piece) = (exchange.rank(), exchange.ranks(), *piece);
        for (s, span) in spans.iter().enumerate() {
            scatter[s * piece..][..span.len()].copy_from_slice(&subtree[span.clone()]);
        }
        let started = std::time::Instant::now();
        exchange.all_to_all(
            super::ranks::bytes_of(scatter),
            super::ranks::bytes_of_mut(mine),
        );
        let run = runs[rank].clone();
        let mut own_squares = std::mem::take(squares_out);
        let own = &mut own_squares[..run.len()];
        run_compiled_chunks(&pool, &kernels[run.clone()], second, &[0.0], own);
        exchange.all_gather(
            super::ranks::bytes_of(&own_squares),
            super::ranks::bytes_of_mut(squares_in),
        );
        *exchange_seconds += started.elapsed().as_secs_f64();
        let peers = (count - 1) as u64;
        *sent_bytes += peers * (piece * std::mem::size_of::<T>() + 8 * own_squares.len()) as u64;
        *squares_out = own_squares;
        let most = squares_out.len();
        for (s, run) in runs.iter().enumerate() {
            chunk_squares[run.clone()].copy_from_slice(&squares_in[s * most..][..run.len()]);
        }
        // The owner's totals, where AdamW (run by the owner alone: `adamw_on_owners`)
        // reads them; the rest of the summed gradient is the other owners' business.
        let span = spans[rank].clone();
        shard_grads[0][span.clone()].copy_from_slice(&mine[..span.len()]);
    }

    /// The fixed tree over every shard buffer, chunk by chunk in parallel, recording
    /// each chunk's Σ g².
    fn tree_sum(&mut self) {
        let pool = std::sync::Arc::clone(&self.pool);
        if let Some(bound) = &self.program {
            let (kernels, tables) = (&bound.program.shard_sum, &bound.shard_sum_tables);
            let squares = &mut self.chunk_squares;
            return run_compiled_chunks(&pool, kernels, tables, &[0.0], squares);
        }
        let state = self.state_pointers();
        let steps: Vec<_> = self.plan.optimizer.iter().map(|c| &c.grad_sum).collect();
        let squares = &mut self.chunk_squares;
        run_reference_chunks(&pool, &steps, &state, &Scalars::default(), squares);
    }

    /// One AdamW update of every parameter from the summed gradient, chunk by chunk
    /// in parallel (elementwise: the chunking changes no bits). `h.weight_decay`
    /// applies to decayed parameters only (not biases and LayerNorm parameters).
    pub fn adamw(&mut self, h: AdamWStep) {
        self.panels_stale = true;
        let pool = std::sync::Arc::clone(&self.pool);
        if self.ranks.as_ref().is_some_and(|r| r.tables.is_some()) {
            return self.adamw_on_owners(h);
        }
        if let Some(bound) = &self.program {
            let (kernels, tables) = (&bound.program.adamw, &bound.adamw_tables);
            let returns = &mut self.chunk_returns;
            return run_compiled_chunks(&pool, kernels, tables, h.scalars().as_array(), returns);
        }
        let state = self.state_pointers();
        let steps: Vec<_> = self.plan.optimizer.iter().map(|c| &c.adamw).collect();
        let scalars = Scalars {
            loss_scale: 0.0,
            adamw: Some(h),
        };
        run_reference_chunks(&pool, &steps, &state, &scalars, &mut self.chunk_returns);
    }

    /// AdamW over ranks, compiled (ZeRO-1): each owner updates its run of chunks (the
    /// gradient totals it alone holds, its run of the moments), then the updated
    /// parameters are all-gathered — the same bytes the gradient totals would take.
    /// Each rank's moments are current on its own run only until
    /// [`Machine::gather_moments`].
    fn adamw_on_owners(&mut self, h: AdamWStep) {
        let pool = std::sync::Arc::clone(&self.pool);
        let Machine {
            ranks,
            program,
            params,
            chunk_returns,
            ..
        } = self;
        let ranks = ranks.as_mut().expect("split over ranks");
        let bound = program.as_ref().expect("compiled");
        let run = ranks.runs[ranks.exchange.rank()].clone();
        let kernels = &bound.program.adamw[run.clone()];
        let tables = &bound.adamw_tables[run.clone()];
        let returns = &mut chunk_returns[run];
        run_compiled_chunks(&pool, kernels, tables, h.scalars().as_array(), returns);
        ranks.gather_spans(params);
        ranks.moments_partial = true;
    }

    /// Makes every rank's AdamW moments whole again after [`Machine::adamw`] updated
    /// only each owner's run (every rank calls it at the same point: a checkpoint).
    pub fn gather_moments(&mut self) {
        let Some(ranks) = self.ranks.as_mut().filter(|r| r.moments_partial) else {
            return;
        };
        ranks.gather_spans(&mut self.m);
        ranks.gather_spans(&mut self.v);
        ranks.moments_partial = false;
    }

    /// Base pointers of the fixed state, for the reference's chunk steps.
    fn state_pointers(&mut self) -> StatePointers<T> {
        StatePointers {
            params: SyncPtr(self.params.as_mut_ptr()),
            grads: self.shard_grad_ptrs.iter().map(|g| SyncPtr(g.0)).collect(),
            m: SyncPtr(self.m.as_mut_ptr()),
            v: SyncPtr(self.v.as_mut_ptr()),
        }
    }
}

/// Where the fixed state's buffers start.
struct StatePointers<T> {
    params: SyncPtr<T>,
    grads: Vec<SyncPtr<T>>,
    m: SyncPtr<T>,
    v: SyncPtr<T>,
}

/// Runs compiled chunk kernel `kernels[i]` on `tables[i]` for every chunk in parallel,
/// with `scalars`, storing what it returns in `returns[i]` (Σ g² for the tree sum).
fn run_compiled_chunks(
    pool: &rayon::ThreadPool,
    kernels: &[KernelFn],
    tables: &[super::Table],
    scalars: &[f64],
    returns: &mut [f64],
) {
    pool.install(|| {
        (returns.par_iter_mut().zip(tables).zip(kernels)).for_each(|((out, table), kernel)| {
            // SAFETY: each table points at one chunk of its buffers (bound from the
            // plan's chunk steps, which the kernel was compiled from); chunks are
            // disjoint, and a −0.0 chunk over ranks is only read.
            *out = unsafe { kernel(table.0.as_ptr(), scalars.as_ptr()) };
        })
    });
}

/// The reference back end of the same chunk steps: `steps[i]` through `run_step` on
/// slices of the fixed state, every chunk in parallel.
fn run_reference_chunks<T: Real>(
    pool: &rayon::ThreadPool,
    steps: &[&Step<StateSlice>],
    state: &StatePointers<T>,
    scalars: &Scalars,
    returns: &mut [f64],
) {
    pool.install(|| {
        (returns.par_iter_mut().zip(steps)).for_each(|(out, step)| {
            let bufs = (*step).clone().map(|slot, slice| {
                let base = match slice.state {
                    State::Params => &state.params,
                    State::Grads { shard } => &state.grads[shard],
                    State::M => &state.m,
                    State::V => &state.v,
                };
                // SAFETY: chunks are disjoint and each task takes its own; within a
                // step the slices are of distinct buffers.
                let mine = unsafe { base.range(slice.offset, slice.len) };
                if slot.writes {
                    Buf::Out(mine)
                } else {
                    Buf::In(&*mine)
                }
            });
            *out = run_step(bufs, scalars);
        })
    });
}

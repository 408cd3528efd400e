//! A step on every core, with the same bits on any number of threads.
//!
//! ```text
//!  panels ──▶ (bf16) each weight rounded into its panels, if the parameters changed
//!  shards ──▶ worker w runs its contiguous block of shards: per shard, zero its
//!             gradient buffer but the weight gradients its first pass stores,
//!             forward + backward of that shard of every micro-batch, accumulating
//!             into it, then the tree's additions that shard completes
//!  sum    ──▶ per parameter chunk (in parallel): the tree above the workers' blocks,
//!             and the chunk's Σ g²; the norm adds chunks in order (`grad_sum.rs`)
//!  chunks ──▶ per parameter chunk (in parallel): AdamW
//! ```
//!
//! Why the bits do not depend on threads: a shard's gradient depends only on its own
//! tokens (kernels overwrite or zero what they read from the arena; the planner's
//! poisoning test checks it), the shard sum is a fixed tree over shard indices (which
//! worker adds a node changes no bit: `plan/grads.rs`), the norm a fixed order over
//! chunks, and losses are added in (micro-batch, shard) order. With fewer shards than
//! threads, each worker's GEMMs split their output rows and columns over the spare
//! threads, which leaves every element's sum in the same order. The hot path takes no
//! lock and allocates nothing: rayon forks with stack jobs when called from inside the
//! machine's pool, and every table is built before the first step.

use rayon::prelude::*;

use cllm_kernels::Real;
use cllm_kernels::adamw::AdamWStep;

use super::chunks::ChunkStep;
use super::worker::Pass;
use super::{Machine, SyncPtr};
use crate::data::Batch;
use crate::plan::Phase;
use crate::plan::grads::ROOT;
use crate::plan::optimizer::State;

impl<T: Real> Machine<T> {
    /// Forward and backward of every shard of every micro-batch (each `batch` holds
    /// `shards` shards of B·T tokens), then the tree sum of the shard gradients;
    /// returns Σ loss over scored targets. `loss_scale` is the step's 1/(scored targets).
    pub fn forward_backward(&mut self, batches: &[Batch], loss_scale: f64) -> f64 {
        if self.stages.is_some() {
            let loss = self.run_stage(batches, loss_scale, true);
            self.sum_stage_grads();
            return loss;
        }
        let loss = self.run_shards(batches, loss_scale, true);
        self.sum_shard_grads();
        loss
    }

    /// Forward only, over every shard of one batch (evaluation); returns Σ loss.
    pub fn forward_batch(&mut self, batch: &Batch) -> f64 {
        if self.stages.is_some() {
            return self.run_stage(std::slice::from_ref(batch), 0.0, false);
        }
        self.run_shards(std::slice::from_ref(batch), 0.0, false)
    }

    fn run_shards(&mut self, batches: &[Batch], loss_scale: f64, backward: bool) -> f64 {
        self.refresh_panels();
        let shards = self.plan.shards;
        let gemm_threads = self.gemm_threads();
        let shard_len = self.plan.graph.dims.rows();
        let passes = batches.len() * shards;
        let pool = std::sync::Arc::clone(&self.pool);
        // Over ranks with overlap, this step's pieces leave during the block's last pass.
        let mut ranks = self.ranks.take();
        let overlap = ranks.as_mut().filter(|r| backward && !r.order.is_empty());
        let pieces = overlap.map(|r| {
            let bytes = r.piece * std::mem::size_of::<T>();
            let recv = r.mine.as_mut_ptr().cast();
            // SAFETY: `mine` is not touched until `sum_over_ranks` closes the exchange.
            unsafe { r.exchange.open_pieces(recv, bytes, &r.part_bytes) };
            r.in_flight = true;
            for arrived in &r.arrived {
                arrived.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            let (scatter, mine) = (
                SyncPtr(r.scatter.as_mut_ptr()),
                SyncPtr(r.mine.as_mut_ptr()),
            );
            (&*r, scatter, mine)
        });
        let (shared, worker_list) = self.split();
        let (chunks, parts) = (shared.chunks, &shared.schedule.workers);
        let sender = pieces.map(|(r, scatter, mine)| super::overlap::Sender {
            exchange: &*r.exchange,
            order: &r.order,
            owners: &r.owners,
            chunk_floats: &r.chunk_floats,
            piece: r.piece,
            chunks,
            last: &shared.schedule.last,
            workers: parts.len(),
            arrived: &r.arrived,
            grads: shared.grads,
            scatter,
            mine,
        });
        pool.install(|| {
            (worker_list.par_iter_mut().zip(parts)).for_each(|(worker, part)| {
                cllm_kernels::gemm::sgemm::set_gemm_threads(gemm_threads);
                if worker.losses.len() < passes {
                    worker.losses.resize(passes, 0.0); // the first step only
                }
                for (local, s) in part.shards.clone().enumerate() {
                    let buffer = part.buffer[local];
                    if backward {
                        // The first pass stores the rest (`Pass::first`).
                        // SAFETY: the schedule gives this buffer to this shard alone.
                        let grads = unsafe { shared.grads[buffer].slice(shared.grads_len) };
                        for range in shared.first_pass_zeroes {
                            grads[range.clone()].fill(T::default());
                        }
                    }
                    for (a, batch) in batches.iter().enumerate() {
                        let rows = s * shard_len..(s + 1) * shard_len;
                        worker.tokens.copy_from_slice(&batch.tokens[rows.clone()]);
                        worker.targets.copy_from_slice(&batch.targets[rows]);
                        let forward = |_, p| p == Phase::Forward;
                        let none = &mut |_| {};
                        let pass = Pass {
                            loss_scale,
                            first: a == 0,
                        };
                        let loss = worker.run(&shared, buffer, local, forward, pass, none);
                        let last = local + 1 == part.shards.len() && a + 1 == batches.len();
                        if backward {
                            // Over ranks with overlap, the last pass sends parts as its
                            // kernels finish them.
                            let sending = sender.as_ref().filter(|_| last);
                            let merges = part.after.last().map_or(&[][..], Vec::as_slice);
                            let mut next = 0;
                            let send = &mut |k| {
                                if let Some(sender) = sending {
                                    // SAFETY: this worker's last pass; its merges and the
                                    // block's are made part by part, once by each worker.
                                    unsafe { sender.after_kernel(k, &mut next, merges) }
                                }
                            };
                            worker.run(&shared, buffer, local, |k, p| !forward(k, p), pass, send);
                            if let Some(sender) = sending {
                                assert_eq!(next, sender.order.len(), "every part was sent");
                            }
                        }
                        worker.losses[a * shards + s] = loss;
                    }
                    // With overlap, the last shard's additions went part by part as above.
                    let added = sender.is_some() && local + 1 == part.shards.len();
                    if backward && !added {
                        // SAFETY: the additions a shard completes read and write buffers
                        // of this worker's finished shards, which no one else touches.
                        unsafe {
                            super::grad_sum::add_all(chunks, &part.after[local], shared.grads)
                        };
                    }
                }
            });
        });
        self.ranks = ranks;
        // Σ loss in (micro-batch, shard) order, whichever worker (or rank) ran a shard.
        let parts = &self.schedule.workers;
        let loss_of = |list: &[super::worker::Worker<T>], pass: usize| {
            let s = pass % shards;
            let w = parts.iter().position(|p| p.shards.contains(&s));
            list[w.expect("every own shard has a worker")].losses[pass]
        };
        let mut total = 0.0;
        match &mut self.ranks {
            None => {
                for pass in 0..passes {
                    total += loss_of(&self.workers, pass);
                }
            }
            Some(ranks) => {
                let own = ranks.own.clone();
                ranks.losses_out.clear();
                for pass in (0..passes).filter(|p| own.contains(&(p % shards))) {
                    ranks.losses_out.push(loss_of(&self.workers, pass));
                }
                total = ranks.total_loss(batches.len());
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
            let tables = kernels.iter().zip(&bound.panel_tables);
            for (kernel, table) in tables.filter_map(|(k, t)| Some((k, t.as_ref()?))) {
                // SAFETY: the table points at a weight and its two panel tensors, sized
                // by the plan the kernel was compiled from; no step runs meanwhile.
                unsafe { kernel(table.0.as_ptr(), [0.0].as_ptr()) };
            }
        });
    }

    /// One AdamW update of every parameter from the summed gradient, chunk by chunk
    /// in parallel (elementwise: the chunking changes no bits). `h.weight_decay`
    /// applies to decayed parameters only (not biases and LayerNorm parameters).
    ///
    /// Over ranks (ZeRO-1): each owner updates its run of chunks (the gradient totals
    /// it alone holds, its run of the moments), then the updated parameters are
    /// all-gathered — the same bytes the gradient totals would take. Each rank holds
    /// the moments of its own run only ([`Machine::gather_moments`] gathers them).
    pub fn adamw(&mut self, h: AdamWStep) {
        self.panels_stale = true;
        self.state_changed(); // what a checkpoint gathered is stale now
        let pool = std::sync::Arc::clone(&self.pool);
        let chunks = super::chunks::Chunks::of(&self.plan, &self.program);
        let [params, m, v] =
            [&mut self.params, &mut self.m, &mut self.v].map(|b| SyncPtr(b.as_mut_ptr()));
        let grads = &self.grad_ptrs[ROOT];
        let returns = SyncPtr(self.chunk_returns.as_mut_ptr());
        let starts = &self.plan.param_chunks;
        // Over ranks the moments hold the owner's chunks packed as its piece.
        // Without replicas, a pipeline stage's moments hold its own chunks packed.
        let stage_own = (self.stages.as_ref())
            .and_then(|s| s.own.as_ref().map(|o| (&o.chunks[s.stage][..], &o.local)));
        let own = self.ranks.as_ref().map(|r| {
            let list: &[usize] = &r.owners.chunks[r.exchange.rank()];
            (list, &r.owners.local)
        });
        let own = own.or(stage_own);
        // A pipeline stage packs its parameters and gradients alike: each chunk moved.
        let root_shifts = self.packed.as_ref().map(|c| &c.shifts);
        let update = |i: usize| {
            // The whole pointers are captured (they are Sync), not their raw fields.
            let (params, m, v, returns) = (&params, &m, &v, &returns);
            let held = own.map_or(starts[i].offset, |(_, local)| local[i]);
            let at = |slice: &crate::plan::optimizer::StateSlice| {
                let shift = || {
                    let shifts = root_shifts.expect("checked");
                    shifts[i].expect("a stage writes the chunks it finishes")
                };
                let base = match slice.state {
                    State::Params if root_shifts.is_some() => params.0.wrapping_offset(shift()),
                    State::Params => params.0,
                    State::Sum if root_shifts.is_some() => grads.0.wrapping_offset(shift()),
                    State::Sum => grads.0,
                    State::M => m.0.wrapping_add(held).wrapping_sub(starts[i].offset),
                    State::V => v.0.wrapping_add(held).wrapping_sub(starts[i].offset),
                    State::Addend(_) => unreachable!("AdamW reads one gradient"),
                };
                base.wrapping_add(slice.offset)
            };
            // SAFETY: each chunk's slices of the four buffers, and its return slot, are
            // its own.
            unsafe { *returns.0.add(i) = chunks.run(ChunkStep::AdamW(h), i, at) };
        };
        pool.install(|| match own {
            Some((list, _)) => list.par_iter().for_each(|&i| update(i)),
            None => (0..starts.len()).into_par_iter().for_each(update),
        });
        if let Some(ranks) = &mut self.ranks {
            ranks.gather_owned(&mut self.params, None);
        }
        if let Some(stage) = &mut self.stages {
            stage.share_params(&mut self.params);
        }
    }

    /// Over ranks, gathers both AdamW moments whole on every rank (each holds its own
    /// span only) for [`Machine::moments`], until the next AdamW step: 8P bytes for the
    /// length of a checkpoint. Every rank calls it at the same point.
    pub fn gather_moments(&mut self) {
        if let Some(stage) = self.stages.as_mut().filter(|s| s.own.is_some()) {
            // Without replicas, to the first stage alone (every stage knows whether
            // it has been since the last update).
            if !std::mem::replace(&mut stage.state_gathered, true) {
                self.gather_to_first_stage();
            }
            return;
        }
        if self.whole_moments.is_some() {
            return;
        }
        let Some(ranks) = self.ranks.as_mut() else {
            return;
        };
        let whole = |own: &[T], ranks: &mut super::ranks::Ranks<T>| {
            let mut all = vec![T::default(); self.param_floats];
            ranks.gather_owned(&mut all, Some(own));
            all
        };
        let m = whole(&self.m, ranks);
        let v = whole(&self.v, ranks);
        self.whole_moments = Some((m, v));
    }
}

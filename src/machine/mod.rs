//! The machine: a [`Plan`]'s memory, and the means to run it on every core.
//!
//! Memory, all allocated once:
//! - one arena per worker (the plan's peak) for activations, saved tensors and
//!   activation gradients, plus the worker's token inputs (`worker.rs`);
//! - the parameters and AdamW's two moments, flat, in parameter order;
//! - a few flat gradient buffers: O(workers × log₂ shards), not one per shard
//!   (`plan/grads.rs`). Each worker runs a contiguous block of shards; a shard's
//!   backward accumulates into a buffer of its own over every micro-batch of the step,
//!   and the fixed tree over shard indices adds two buffers the moment both exist
//!   (`parallel.rs`), so the step's gradient is the same bits whichever worker ran
//!   which shard, on any number of threads.
//!
//! Each of these is zeroed and offered to the kernel's 2 MiB pages (`buffers.rs`).
//!
//! Kernels run either JIT-compiled (a [`Program`]) or with the reference kernels of
//! `cllm-kernels` (the interpreter: plain loops, f64 accumulation; the correctness
//! baseline). Storage is generic: `f32` for training, `f64` for the end-to-end
//! gradient check (reference only). On the JIT path nothing is allocated per step:
//! every argument table is built once, when the program is attached.

mod bind;
mod buffers;
mod chunks;
mod grad_sum;
mod overlap;
mod parallel;
mod pipeline;
mod places;
mod ranks;
mod reference;
mod stage_layout;
mod stage_state;
mod state;
mod thread_ranks;
mod worker;

pub use ranks::{Agreement, Exchange, RankError, agree, any_rank, rank_counts};
pub use stage_layout::StageError;
pub use thread_ranks::ThreadRanks;

use std::sync::Arc;

use cllm_kernels::Real;

use crate::codegen::Program;
use crate::graph::{Graph, Role, TensorId};
use crate::plan::grads::{self, GradSchedule, ROOT};
use crate::plan::{Phase, Plan};
use buffers::Buffer;
use places::{Place, Region, SyncPtr, Table};
use worker::{Pass, Shared, Worker};

/// A plan's buffers and the means to run it.
pub struct Machine<T: Real> {
    plan: Plan,
    /// The parameters, flat in parameter order — a pipeline stage without replicas
    /// holds only those its kernels touch, packed (`stage_layout.rs`).
    params: Buffer<T>,
    /// Floats of the whole model's parameters (of one gradient buffer holding all).
    param_floats: usize,
    /// A pipeline stage's parameters gathered whole on the first stage for a
    /// checkpoint ([`Machine::gather_moments`]), until the next AdamW step.
    whole_params: Option<Vec<T>>,
    /// The gradient buffers of `schedule`; after a step, buffer [`ROOT`] holds the
    /// step's gradient. Not resized once a program is attached, so `grad_ptrs` stay
    /// valid.
    grads: Vec<Buffer<T>>,
    grad_ptrs: Vec<SyncPtr<T>>,
    /// Which shards each worker runs, into which buffer, and the tree's additions.
    schedule: GradSchedule,
    /// AdamW's first and second moments, flat like `params` — over ranks, only this
    /// rank's own chunks of them, packed as its piece (ZeRO-1: 8P/R bytes).
    m: Buffer<T>,
    v: Buffer<T>,
    /// Over ranks, both moments gathered whole for a checkpoint
    /// ([`Machine::gather_moments`]), until the next AdamW step.
    whole_moments: Option<(Vec<T>, Vec<T>)>,
    /// The attention pattern's (T,T) mask (empty for dense attention).
    mask: Vec<T>,
    /// The weights' bf16 panels (bf16 mode), each from a cache line.
    panels: Buffer<T>,
    /// Whether the parameters changed since the panels were last made from them.
    panels_stale: bool,
    /// Offset of each parameter in `params` (and of its gradient in every gradient buffer).
    param_offsets: Vec<usize>,
    places: Vec<Place>,
    /// What a shard's first pass of a step zeroes in its gradient buffer
    /// ([`places::first_pass_zeroes`]).
    first_pass_zeroes: Vec<std::ops::Range<usize>>,
    workers: Vec<Worker<T>>,
    /// Σ g² of each parameter chunk of the last gradient sum.
    chunk_squares: Vec<f64>,
    /// What AdamW's chunk kernels return (nothing of use; kept apart from the norms).
    chunk_returns: Vec<f64>,
    program: Option<Bound>,
    pool: Arc<rayon::ThreadPool>,
    /// Fill every arena tensor with NaN right after its last use (tests liveness).
    poison: bool,
    /// This process's shards and exchange when the step is split over ranks.
    ranks: Option<ranks::Ranks<T>>,
    /// This process's stage when the model is cut into pipeline stages over ranks.
    stages: Option<pipeline::Stages<T>>,
    /// A pipeline stage's parameters and gradient buffers hold only the parameters its
    /// kernels touch, packed (`places` say where).
    packed: Option<stage_layout::Packed>,
}

/// A compiled program and the argument tables of its weight-panel kernels, per
/// weight (the chunk steps' tables are made on the stack: `chunks.rs`).
struct Bound {
    program: Program,
    panel_tables: Vec<Option<Table>>,
}

impl<T: Real> Machine<T> {
    /// Allocates every buffer and starts the plan's threads (parameters start at zero).
    ///
    /// # Panics
    /// If the OS cannot start the plan's threads ([`Machine::try_new`] says so instead).
    pub fn new(plan: Plan) -> Self {
        Machine::try_new(plan).expect("the OS can start the plan's threads")
    }

    /// [`Machine::new`], or the reason the OS could not start the plan's threads.
    pub fn try_new(plan: Plan) -> Result<Self, rayon::ThreadPoolBuildError> {
        let graph = &plan.graph;
        let param_offsets = graph.param_offsets();
        let total: usize = graph
            .params
            .iter()
            .map(|p| graph.tensor(p.tensor).len())
            .sum();
        let (panels, panel_offsets) = panel_layout(graph, |_| true);
        let places = graph
            .tensors
            .iter()
            .enumerate()
            .map(|(id, t)| {
                let (region, offset) = match t.role {
                    Role::Tokens => (Region::Tokens, 0),
                    Role::Mask => (Region::Mask, 0),
                    Role::Panels(_) => (Region::Panels, panel_offsets[id]),
                    Role::Targets => (Region::Targets, 0),
                    Role::Param(i) => (Region::Params, param_offsets[i]),
                    Role::ParamGrad(i) => (Region::Grads, param_offsets[i]),
                    Role::Activation | Role::Saved | Role::Grad => {
                        match plan.slots[id] {
                            Some(slot) => (Region::Arena, slot.offset),
                            // Never touched by any kernel (e.g. the loss gradient's seed).
                            None => {
                                return Place {
                                    region: Region::Arena,
                                    offset: 0,
                                    len: 0,
                                };
                            }
                        }
                    }
                };
                Place {
                    region,
                    offset,
                    len: t.len(),
                }
            })
            .collect::<Vec<Place>>();
        let first_pass_zeroes = places::first_pass_zeroes(&plan, &places, total);
        let schedule = grads::schedule(plan.shards, 0..plan.shards, plan.workers);
        let (grads, grad_ptrs) = grad_buffers(schedule.buffers, total);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(plan.threads)
            .thread_name(|i| format!("cllm-worker-{i}"))
            .build()?;
        Ok(Machine {
            params: buffers::zeroed(total),
            param_floats: total,
            whole_params: None,
            grads,
            grad_ptrs,
            schedule,
            m: buffers::zeroed(total),
            v: buffers::zeroed(total),
            whole_moments: None,
            mask: plan.pattern.as_ref().map_or(Vec::new(), |p| {
                p.mask()
                    .into_iter()
                    .map(|x| T::from_f64(x as f64))
                    .collect()
            }),
            panels,
            panels_stale: true,
            param_offsets,
            places,
            first_pass_zeroes,
            workers: (0..plan.workers).map(|_| Worker::new(&plan)).collect(),
            chunk_squares: vec![0.0; plan.param_chunks.len()],
            chunk_returns: vec![0.0; plan.param_chunks.len()],
            program: None,
            pool: Arc::new(pool),
            poison: false,
            ranks: None,
            stages: None,
            packed: None,
            plan,
        })
    }

    /// Splits every step over the ranks of `exchange`: this process runs its block of
    /// the shards and exchanges subtree sums (`ranks.rs`). Call before `attach_jit`.
    /// With `overlap`, each part of each owner's piece of the gradient leaves as soon as
    /// backward has finished it (`overlap.rs`).
    pub fn set_ranks(
        &mut self,
        exchange: Arc<dyn Exchange>,
        overlap: bool,
    ) -> Result<(), RankError> {
        assert!(self.program.is_none(), "set_ranks goes before attach_jit");
        let chunks = &self.plan.param_chunks;
        let finals = crate::plan::overlap::final_kernels(&self.plan);
        let mut ranks = ranks::Ranks::new(exchange, self.plan.shards, chunks, &finals)?;
        self.schedule = grads::schedule(self.plan.shards, ranks.own.clone(), self.plan.workers);
        if overlap {
            ranks.order = ranks.owners.sending_order();
        }
        (self.grads, self.grad_ptrs) = grad_buffers(self.schedule.buffers, self.param_floats);
        // The moments of this rank's own chunks only: their owner alone updates them.
        let own = ranks.own_len();
        (self.m, self.v) = (buffers::zeroed(own), buffers::zeroed(own));
        // A block of fewer shards than workers leaves the rest idle: their arenas go.
        self.workers.truncate(self.schedule.workers.len());
        self.ranks = Some(ranks);
        Ok(())
    }

    /// Seconds this process has spent exchanging with the other ranks (waiting for the
    /// slowest included); `None` when it runs alone.
    pub fn exchange_seconds(&self) -> Option<f64> {
        let stage = self.stages.as_ref().map(|s| s.seconds);
        self.ranks.as_ref().map(|r| r.exchange_seconds).or(stage)
    }

    /// Seconds the gradient all-to-all kept this process waiting after its compute, and
    /// whether it was overlapped with backward; `None` when it runs alone.
    pub fn all_to_all_wait(&self) -> Option<(f64, bool)> {
        (self.ranks.as_ref()).map(|r| (r.all_to_all_seconds, !r.order.is_empty()))
    }

    /// Bytes this process has sent to the other ranks; `None` when it runs alone.
    pub fn exchange_bytes(&self) -> Option<u64> {
        let stage = self.stages.as_ref().map(|s| s.sent_bytes);
        self.ranks.as_ref().map(|r| r.sent_bytes).or(stage)
    }

    /// The pipeline's stage count when this process is one of its stages.
    pub fn pipeline_stages(&self) -> Option<usize> {
        self.stages.as_ref().map(|s| s.plan.stages)
    }

    /// Bytes of one worker's arena (a pipeline stage's own, smaller than the plan's).
    pub fn arena_bytes(&self) -> u64 {
        let floats = self.workers.first().map_or(0, |w| w.arena.len());
        (floats * std::mem::size_of::<T>()) as u64
    }

    /// How many arenas this process holds (workers, or a stage's passes in flight).
    pub fn arena_count(&self) -> usize {
        self.workers.len()
    }

    /// Threads each worker's kernels split over (more than one when there are fewer
    /// shards than threads: the GEMMs, row passes and heads of one shard share them).
    pub fn gemm_threads(&self) -> usize {
        (self.plan.threads / self.schedule.workers.len()).max(1)
    }

    /// Bytes of the parameters this process holds (a pipeline stage without replicas:
    /// those its kernels touch).
    pub fn param_bytes(&self) -> u64 {
        (self.params.len() * std::mem::size_of::<T>()) as u64
    }

    /// Bytes of the AdamW moments this process holds (over ranks or stages, its share).
    pub fn moment_bytes(&self) -> u64 {
        ((self.m.len() + self.v.len()) * std::mem::size_of::<T>()) as u64
    }

    /// Bytes of the gradient buffers this process holds.
    pub fn gradient_bytes(&self) -> u64 {
        let floats: usize = self.grads.iter().map(|g| g.len()).sum();
        (floats * std::mem::size_of::<T>()) as u64
    }

    /// Seconds the attached program took to compile.
    pub fn compile_seconds(&self) -> Option<f64> {
        self.program.as_ref().map(|b| b.program.compile_seconds)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn graph(&self) -> &Graph {
        &self.plan.graph
    }

    /// The machine's thread pool. Run a training loop inside `pool.install(..)` so
    /// that each step's parallel work is forked from a pool thread (no allocation).
    pub fn pool(&self) -> Arc<rayon::ThreadPool> {
        Arc::clone(&self.pool)
    }

    /// Starts timing every kernel call (one clock read before and after each).
    pub fn enable_profile(&mut self) {
        for worker in &mut self.workers {
            worker.profile = Some(vec![0.0; self.plan.kernels.len()]);
        }
    }

    /// Seconds spent in each plan kernel since profiling started, summed over workers.
    pub fn profile(&self) -> Option<Vec<f64>> {
        let mut total = vec![0.0; self.plan.kernels.len()];
        for worker in &self.workers {
            for (t, s) in total.iter_mut().zip(worker.profile.as_ref()?) {
                *t += s;
            }
        }
        Some(total)
    }

    /// Poisons every arena tensor with NaN when its lifetime ends.
    pub fn set_poison(&mut self, poison: bool) {
        self.poison = poison;
    }

    /// Σ g² of the step's gradient (from the last tree sum), added in chunk order.
    pub fn grad_norm_squared(&self) -> f64 {
        self.chunk_squares.iter().sum()
    }

    /// A tensor's current contents in worker 0's view; an arena tensor's are valid
    /// only while it is live.
    pub fn tensor(&self, id: TensorId) -> &[T] {
        let Place {
            region,
            offset,
            len,
        } = self.places[id.0];
        match region {
            Region::Arena => &self.workers[0].arena[offset..offset + len],
            Region::Params => &self.params[offset..offset + len],
            Region::Grads => &self.grads[ROOT][offset..offset + len],
            Region::Mask => &self.mask[offset..offset + len],
            Region::Panels => &self.panels[offset..offset + len],
            Region::Tokens | Region::Targets => &[],
        }
    }

    /// Sets every gradient buffer to zero.
    pub fn zero_param_grads(&mut self) {
        for g in &mut self.grads {
            g.fill(T::default());
        }
    }

    /// The read-only view every worker shares, and the workers, borrowed apart.
    fn split(&mut self) -> (Shared<'_, T>, &mut [Worker<T>]) {
        let Machine {
            plan,
            places,
            first_pass_zeroes,
            params,
            param_floats,
            mask,
            grad_ptrs,
            schedule,
            program,
            poison,
            workers,
            packed,
            ..
        } = self;
        let shared = Shared {
            plan,
            places,
            params,
            mask,
            grads: grad_ptrs,
            // A pipeline stage's buffers hold only its parameters' gradients.
            grads_len: packed.as_ref().map_or(*param_floats, |c| c.len),
            first_pass_zeroes,
            schedule,
            chunks: chunks::Chunks {
                shifts: packed.as_ref().map(|c| &c.shifts[..]),
                ..chunks::Chunks::of(plan, program)
            },
            kernels: program.as_ref().map(|b| b.program.kernels.as_slice()),
            poison: *poison,
        };
        (shared, workers)
    }

    /// Runs the forward kernels of shard 0 on worker 0 (a one-shard plan's whole
    /// batch: B·T tokens and targets); returns Σ loss over scored targets.
    /// `loss_scale` is the step's 1/(scored targets), which the fused loss kernel
    /// uses to write the logits' gradient.
    pub fn forward(&mut self, tokens: &[u32], targets: &[u32], loss_scale: f64) -> f64 {
        self.refresh_panels();
        let (shared, workers) = self.split();
        let worker = &mut workers[0];
        worker.tokens.copy_from_slice(tokens);
        worker.targets.copy_from_slice(targets);
        worker.run(
            &shared,
            ROOT,
            0,
            |_, p| p == Phase::Forward,
            Pass::adding(loss_scale),
            &mut |_| {},
        )
    }

    /// Runs the recompute and backward kernels of the last [`Machine::forward`],
    /// accumulating into shard 0's gradients.
    pub fn backward(&mut self, loss_scale: f64) {
        let (shared, workers) = self.split();
        workers[0].run(
            &shared,
            ROOT,
            0,
            |_, p| p != Phase::Forward,
            Pass::adding(loss_scale),
            &mut |_| {},
        );
    }
}

/// The weights' bf16 panels of the weights `held(i)`, each from a cache line (64 bytes
/// of the element type; a [`Buffer`] starts on one): the zeroed buffer, and each panel
/// tensor's offset in it (by tensor id; 0 for any other tensor).
fn panel_layout<T: Real>(graph: &Graph, held: impl Fn(usize) -> bool) -> (Buffer<T>, Vec<usize>) {
    let line = 64 / std::mem::size_of::<T>();
    let mut floats = 0;
    let offsets: Vec<usize> = (graph.tensors.iter())
        .map(|t| match t.role {
            Role::Panels(i) if held(i) => {
                let at = floats;
                floats += t.len().next_multiple_of(line);
                at
            }
            _ => 0,
        })
        .collect();
    (buffers::zeroed(floats), offsets)
}

/// `count` zeroed gradient buffers of `len` floats, and their base pointers.
fn grad_buffers<T: Real>(count: usize, len: usize) -> (Vec<Buffer<T>>, Vec<SyncPtr<T>>) {
    let mut buffers: Vec<Buffer<T>> = (0..count).map(|_| buffers::zeroed(len)).collect();
    let pointers = buffers
        .iter_mut()
        .map(|g| SyncPtr(g.as_mut_ptr()))
        .collect();
    (buffers, pointers)
}

// SAFETY: the raw pointers in `Bound` and the workers' tables point into this
// machine's own heap buffers, which move with it and are only used through `&mut self`.
unsafe impl<T: Real> Send for Machine<T> {}

//! Stage 3: a [`Graph`] → the [`Plan`] of one training step, decided ahead of time.
//!
//! The plan is the ordered list of kernels (each a fusion group of graph ops), the
//! static memory plan (every activation, saved tensor and activation gradient at an
//! offset in one arena per worker, reusing bytes between tensors whose lifetimes do
//! not overlap), which activations are kept for backward and which are recomputed,
//! the shard split of the batch, and the optimizer's steps per parameter chunk. Each
//! decision is a named pass `Plan → Plan`, called once, in the order [`plan_with`]
//! lists (fusion can be switched off, recompute's policy chosen by [`PassOptions`]):
//!
//! ```text
//! schedule ─▶ fuse ─▶ recompute ─▶ lower ─▶ allocate
//! (graph,      (softmax_xent,     (keep or     (kernel IR,   (lifetimes,
//!  one kernel   bias_gelu,         recompute,   FLOPs and     arena offsets:
//!  per op,      residual_         by the bytes  bytes)        placement.rs)
//!  optimizer)   layernorm)         it needs)
//! ```

mod admission;
mod cost;
mod error;
mod fusion;
pub mod grads;
pub mod ir;
mod listing;
mod memory;
pub mod optimizer;
pub mod overlap;
pub mod owners;
pub mod panels;
pub mod pipeline;
mod placement;
mod recompute;
mod report;
pub mod scaling;
pub mod stages;
mod svg;
pub mod thread_scaling;

pub use admission::admit;
pub use error::PlanError;

use serde::Serialize;

use cllm_kernels::attention::BlockLists;

use crate::graph::{Graph, Op, Role, TensorId};
use crate::lattice::{LatticeError, Pattern, PatternKind, Placement};
use crate::spec::{Attention, Coords, Gemm, Spec, Threads};
use cllm_kernels::bf16::Precision;

pub use listing::kernel_listing;
pub use memory::{ArenaStats, Slot};
pub use report::describe;
pub use svg::lifetimes_svg;

/// When a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    Forward,
    /// Recomputes a forward activation in the backward pass (not kept to save memory).
    Recompute,
    Backward,
}

/// One kernel: a fusion group of graph ops run back to back, and what it costs.
#[derive(Clone, Debug, Serialize)]
pub struct Kernel {
    pub name: String,
    pub phase: Phase,
    pub ops: Vec<Op>,
    /// What the kernel runs: its ops lowered to the kernel IR (`ir`), which both back
    /// ends consume; `flops` and `bytes` are counted from it.
    pub steps: Vec<ir::StepCall>,
    pub flops: u64,
    /// Bytes read and written, counting each tensor the group touches once.
    pub bytes: u64,
    /// Activation gradients this kernel writes first and adds to: zeroed just before
    /// it runs (one its product stores is not listed: `ir::mark_stored_input_grads`).
    pub zero_first: Vec<TensorId>,
}

/// A fixed piece of the flat parameter buffer: the unit of parallel work of the
/// shard-gradient sum and AdamW. Chunks never straddle two parameters (so each has
/// one weight-decay flag) and are fixed by the plan, so the chunk-ordered sum of the
/// gradient norm never depends on the thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamChunk {
    /// Offset in floats in the flat parameter (and gradient, moment) buffers.
    pub offset: usize,
    pub len: usize,
    /// Whether AdamW's weight decay applies.
    pub decay: bool,
}

/// Bytes of one f32: every tensor's element.
pub const BYTES_PER_FLOAT: u64 = 4;

/// Floats per parameter chunk at most: 128 KiB per shard, so the chunk of every
/// shard's gradient stays in L2 while the tree sums it.
pub const PARAM_CHUNK: usize = 1 << 15;

/// Which optional passes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassOptions {
    pub fuse: bool,
    pub recompute: Recompute,
}

/// Keep or recompute activations needed by backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recompute {
    /// Keep everything that fits; recompute (cheapest bytes first) only to fit the budget.
    Auto,
    /// Keep everything (the budget must still hold).
    Never,
    /// Recompute every candidate (for tests and for the tightest budgets).
    All,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            fuse: true,
            recompute: Recompute::Auto,
        }
    }
}

/// The whole step, planned.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The graph of one shard (`dims.batch` = rows per shard), with recomputed copies added.
    pub graph: Graph,
    pub shards: usize,
    /// Threads of the run (`plan.threads`; `auto` is every core).
    pub threads: usize,
    /// Workers that each hold an arena (min(threads, shards)); each runs a contiguous
    /// block of the shards (`grads.rs`).
    pub workers: usize,
    /// Gradient buffers a single process holds (`grads.rs`: O(workers × log₂ shards)).
    pub grad_buffers: usize,
    /// The parameter buffer cut into chunks for the gradient sum and AdamW.
    pub param_chunks: Vec<ParamChunk>,
    /// Per chunk, the optimizer's steps (`optimizer.rs`); left out of the JSON (one
    /// pair per 32 Ki parameters).
    #[serde(skip)]
    pub optimizer: Vec<optimizer::ChunkSteps>,
    pub kernels: Vec<Kernel>,
    /// In bf16 mode, one `WeightPanels` step per weight matrix (`panels.rs`), run
    /// before every step that reads the panels; left out of the JSON.
    #[serde(skip)]
    pub panels: Vec<ir::StepCall>,
    /// Arena slot of every tensor that lives in the arena (indexed by tensor id).
    pub slots: Vec<Option<Slot>>,
    pub arena: ArenaStats,
    /// Bytes of parameters, AdamW's two moments and the gradient buffers (the fixed
    /// region).
    pub fixed_bytes: u64,
    /// What one process may hold (`plan.memory_budget`, or the machine's memory).
    pub memory_budget: u64,
    /// The pipeline stages the plan is cut into (`plan.stages`): the whole model may
    /// use that many budgets, each stage one (checked per stage when the run starts:
    /// `machine/stage_layout.rs`).
    #[serde(skip)]
    pub stages: usize,
    pub recomputed: Vec<String>,
    pub passes: Vec<&'static str>,
    /// Who multiplies matrices (from `plan.gemm`).
    pub gemm: Gemm,
    /// The arithmetic of every matrix product (from `train.precision`).
    pub precision: Precision,
    /// The attention pattern, when it is not dense (its mask is the graph's `keep`).
    pub pattern: Option<Pattern>,
    /// The tiles attention visits: a sparse pattern's listed tiles when it leaves at
    /// most half of dense's, else the causal triangle (every key block up to the
    /// diagonal, with the pattern's mask if any).
    pub attention_blocks: BlockLists,
}

impl Plan {
    /// Who multiplies matrices and in what arithmetic: what the decoder of a run's
    /// model needs to compute as its training did.
    pub fn arithmetic(&self) -> (Gemm, Precision) {
        (self.gemm, self.precision)
    }
}

/// Query and key block size of block-sparse attention.
pub const ATTENTION_BLOCK: usize = 64;

/// Dense causal attention as tiles: query block qb sees key blocks 0..=qb, so the
/// masked upper triangle is never computed. Blocks of T/8 rows, 32 to 64: smaller
/// blocks skip more of the square (T = 256 in 32s computes 56% of it, in 64s 62%) but
/// make smaller GEMMs.
pub fn causal_blocks(t: usize) -> BlockLists {
    let block = (t / 8).clamp(32, ATTENTION_BLOCK).min(t);
    BlockLists::causal(t, block)
}

pub use crate::spec::human_bytes;

/// `model.attention` in the lattice module's terms.
pub fn pattern_kind(attention: &Attention) -> PatternKind {
    let n = |x: u64| x as usize;
    match attention {
        Attention::Dense => PatternKind::Dense,
        Attention::Window { window } => PatternKind::Window { window: n(*window) },
        Attention::Strided { stride, window } => PatternKind::Strided {
            stride: n(*stride),
            window: n(*window),
        },
        Attention::Primes { window } => PatternKind::Primes { window: n(*window) },
        Attention::Lattice {
            coords,
            basis,
            radius,
            window,
        } => PatternKind::Lattice {
            placement: match *coords {
                Coords::Grid { width } => Placement::Grid { width },
                Coords::Ulam => Placement::Ulam,
            },
            basis: basis.clone(),
            radius: *radius,
            window: n(*window),
        },
    }
}

/// The attention pattern of `spec` over its context (none when dense): the one place
/// it is built, for training, evaluation and sampling alike.
pub fn attention_pattern(spec: &Spec) -> Result<Option<Pattern>, LatticeError> {
    let attention = &spec.model.attention;
    if !attention.masked() {
        return Ok(None);
    }
    Pattern::new(&pattern_kind(attention), spec.model.context as usize).map(Some)
}

/// Plans one optimizer step of `spec` with the default passes.
pub fn plan(spec: &Spec) -> Result<Plan, PlanError> {
    plan_with(spec, PassOptions::default())
}

/// Plans with the given passes switched on or off: the planner is this chain of passes,
/// each called once and recorded in `plan.passes` (their one-line docs say what each
/// reads and writes). Recompute runs before lowering because it renames the inputs of
/// backward kernels to the fresh copies it inserts.
pub fn plan_with(spec: &Spec, options: PassOptions) -> Result<Plan, PlanError> {
    let mut plan = panels::weight_panels(schedule(spec)?);
    if options.fuse {
        plan = fusion::fuse(plan);
    }
    let plan = recompute::recompute(plan, options.recompute)?;
    let plan = ir::lower_kernels(plan);
    Ok(memory::allocate(plan))
}

/// The first pass: reads the spec; admits it (`admission.rs`), builds the graph of one
/// shard and the attention tiles, and writes one kernel per graph op, forward then
/// backward, and the optimizer's chunk steps.
fn schedule(spec: &Spec) -> Result<Plan, PlanError> {
    // `spec::validate` reports this with the spec's spans; a spec built in code (or an
    // override applied after validation) meets the same check here.
    let micro_batch = spec.train.micro_batch() as usize;
    let shards = spec.plan.shards as usize;
    if shards == 0 || !micro_batch.is_multiple_of(shards) {
        let suggestion =
            crate::spec::largest_shard_count(micro_batch as u64, shards as u64) as usize;
        return Err(PlanError::Shards {
            shards,
            micro_batch,
            suggestion,
        });
    }
    let stages = spec.plan.stages as usize;
    if stages == 0 || stages > spec.model.layers as usize {
        let layers = spec.model.layers as usize;
        return Err(PlanError::Stages { stages, layers });
    }
    let threads = match spec.plan.threads {
        Threads::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Threads::Count(n) => n as usize,
    };
    let threads = threads.max(1);
    let workers = threads.min(shards);
    // Admission bounds everything the sizes alone fix (the parameter state among it,
    // with the fewest gradient buffers a step can hold: one per worker), so past it the
    // schedule of the gradient sum is small enough to make and only the arena is left.
    admission::admit(spec, workers as u64)?;
    let graph = crate::graph::build(spec, micro_batch / shards);
    let pattern = attention_pattern(spec)?;
    let sparse = pattern.as_ref().and_then(|p| {
        let block = ATTENTION_BLOCK.min(p.t);
        let stats = p.blocks(block);
        (2 * stats.blocks <= stats.dense_blocks).then(|| BlockLists {
            block,
            lists: p.block_lists(block),
        })
    });
    let attention_blocks = sparse.unwrap_or_else(|| causal_blocks(graph.dims.t));
    let mut kernels = Vec::new();
    for (phase, ops) in [
        (Phase::Forward, &graph.forward),
        (Phase::Backward, &graph.backward),
    ] {
        for op in ops {
            kernels.push(Kernel {
                name: op.kind.name().to_string(),
                phase,
                ops: vec![op.clone()],
                flops: 0,
                bytes: 0,
                zero_first: Vec::new(),
                steps: Vec::new(),
            });
        }
    }
    let param_chunks = param_chunks(&graph);
    let optimizer = optimizer::lower_optimizer(&param_chunks);
    let grad_buffers = grads::buffer_count(shards, workers);
    Ok(Plan {
        graph,
        shards,
        threads,
        workers,
        grad_buffers,
        param_chunks,
        optimizer,
        kernels,
        panels: Vec::new(),
        slots: Vec::new(),
        arena: ArenaStats::default(),
        fixed_bytes: admission::fixed_bytes(spec, grad_buffers as u64),
        memory_budget: admission::budget(spec),
        stages,
        recomputed: Vec::new(),
        passes: vec!["schedule"],
        gemm: spec.plan.gemm,
        precision: spec.train.precision,
        pattern,
        attention_blocks,
    })
}

/// Every parameter cut into chunks of at most [`PARAM_CHUNK`] floats, in order.
fn param_chunks(graph: &Graph) -> Vec<ParamChunk> {
    let mut chunks = Vec::new();
    let mut offset = 0;
    for p in &graph.params {
        let len = graph.tensor(p.tensor).len();
        for start in (0..len).step_by(PARAM_CHUNK) {
            chunks.push(ParamChunk {
                offset: offset + start,
                len: PARAM_CHUNK.min(len - start),
                decay: p.decay,
            });
        }
        offset += len;
    }
    chunks
}

impl Plan {
    /// Whether a tensor lives in the arena (activations, saved tensors, activation
    /// gradients) rather than the fixed region or the token inputs.
    pub fn in_arena(&self, id: TensorId) -> bool {
        matches!(
            self.graph.tensor(id).role,
            Role::Activation | Role::Saved | Role::Grad
        )
    }

    /// FLOPs of one whole optimizer step (every shard and micro-batch).
    pub fn step_flops(&self, accumulate: u64) -> u64 {
        let per_shard: u64 = self.kernels.iter().map(|k| k.flops).sum();
        per_shard * self.shards as u64 * accumulate
    }

    /// Bytes of the gradient buffers a single process holds.
    pub fn gradient_bytes(&self) -> u64 {
        let floats: usize = self.param_chunks.iter().map(|c| c.len).sum();
        BYTES_PER_FLOAT * (self.grad_buffers * floats) as u64
    }

    /// Total bytes the plan needs: the fixed region and every worker's arena.
    pub fn total_bytes(&self) -> u64 {
        self.fixed_bytes + self.workers as u64 * self.arena.peak_bytes
    }
}

//! A worker: one arena and one shard's token inputs, and the loop that runs the plan's
//! kernels in order on them — JIT-compiled, or op by op with the reference kernels.
//! Worker w runs a contiguous block of the shards of every step (`plan/grads.rs`),
//! each into the gradient buffer the schedule gives it.

use cllm_kernels::Real;

use super::reference::{self, StepContext};
use super::{Place, Region, SyncPtr, Table};
use crate::codegen::CompiledKernel;
use crate::plan::{Phase, Plan};

pub(super) struct Worker<T: Real> {
    pub(super) arena: super::buffers::Buffer<T>,
    pub(super) tokens: Vec<u32>,
    pub(super) targets: Vec<u32>,
    /// Loss sum of each (micro-batch, shard) pass this worker ran in the last step,
    /// at index `micro_batch · shards + shard`; the machine adds them in that order.
    pub(super) losses: Vec<f64>,
    /// JIT argument tables, `tables[j][k]`: this worker's j-th shard, kernel k.
    pub(super) tables: Vec<Vec<Table>>,
    /// Seconds spent in each plan kernel, when profiling.
    pub(super) profile: Option<Vec<f64>>,
}

/// The run-time scalars of one pass of a shard's kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    /// 1 / scored targets of the step: the loss kernel's gradient scale.
    pub loss_scale: f64,
    /// The shard's first pass of the step into its gradient buffer, which was zeroed
    /// only where no product stores ([`Shared::first_pass_zeroes`]).
    pub first: bool,
}

impl Pass {
    /// A pass into a gradient buffer zeroed whole, or holding earlier passes' sums:
    /// every product adds.
    pub fn adding(loss_scale: f64) -> Pass {
        Pass {
            loss_scale,
            first: false,
        }
    }
}

/// What every worker shares, read-only, while a step runs.
pub(super) struct Shared<'a, T: Real> {
    pub plan: &'a Plan,
    pub places: &'a [Place],
    pub params: &'a [T],
    /// The attention pattern's mask (empty when dense).
    pub mask: &'a [T],
    /// Base of each gradient buffer (each written by one worker at a time).
    pub grads: &'a [SyncPtr<T>],
    /// Floats of each gradient buffer.
    pub grads_len: usize,
    /// What a shard's first pass of a step needs zeroed in its gradient buffer: all of
    /// it but the weight gradients that products store in that pass
    /// (`Step::MatmulBackward`'s `stores_dweight`).
    pub first_pass_zeroes: &'a [std::ops::Range<usize>],
    /// Which shards each worker runs, into which buffers, and the tree's additions.
    pub schedule: &'a crate::plan::grads::GradSchedule,
    /// The optimizer's chunk steps (for the gradient tree's additions).
    pub chunks: super::chunks::Chunks<'a>,
    /// The compiled plan kernels (none: run the reference kernels).
    pub kernels: Option<&'a [CompiledKernel]>,
    pub poison: bool,
}

impl<T: Real> Worker<T> {
    pub(super) fn new(plan: &Plan) -> Worker<T> {
        Worker::with_arena(plan, (plan.arena.peak_bytes / 4) as usize)
    }

    /// A worker whose arena holds `floats` (a pipeline stage's own arena).
    pub(super) fn with_arena(plan: &Plan, floats: usize) -> Worker<T> {
        let n = plan.graph.dims.rows();
        Worker {
            arena: super::buffers::zeroed(floats),
            tokens: vec![0; n],
            targets: vec![0; n],
            losses: Vec::new(),
            tables: Vec::new(),
            profile: None,
        }
    }

    /// Runs the kernels `select`ed (by index and phase) for the worker's `local`-th shard, whose gradients
    /// go to buffer `grads`, calling `after(k)` once kernel k has run; returns the loss
    /// sum of the loss kernel.
    pub(super) fn run(
        &mut self,
        shared: &Shared<'_, T>,
        grads: usize,
        local: usize,
        select: impl Fn(usize, Phase) -> bool,
        pass: Pass,
        after: &mut dyn FnMut(usize),
    ) -> f64 {
        let plan = shared.plan;
        let mut loss_sum = 0.0;
        for (k, kernel) in plan.kernels.iter().enumerate() {
            if !select(k, kernel.phase) {
                continue;
            }
            let started = self.profile.as_ref().map(|_| std::time::Instant::now());
            for id in &kernel.zero_first {
                let place = shared.places[id.0];
                self.arena[place.offset..place.offset + place.len].fill(T::default());
            }
            match shared.kernels {
                Some(compiled) => {
                    let mut scalars = [0.0; cllm_kernels::jit::PASS_SCALARS];
                    scalars[cllm_kernels::jit::LOSS_SCALE] = pass.loss_scale;
                    scalars[cllm_kernels::jit::FIRST_PASS] = f64::from(u8::from(pass.first));
                    // SAFETY: the table points at this worker's arena and inputs, the
                    // shared parameters and this shard's gradients, sized by the plan
                    // the kernel was compiled from; none of them moves.
                    loss_sum += unsafe {
                        (compiled[k].function)(self.tables[local][k].0.as_ptr(), scalars.as_ptr())
                    };
                }
                None => {
                    // SAFETY: the schedule gives this buffer to this worker's shard
                    // alone, so it is ours for the duration of the kernel.
                    let grads = unsafe { shared.grads[grads].slice(shared.grads_len) };
                    let mut context = StepContext {
                        places: shared.places,
                        arena: &mut self.arena,
                        params: shared.params,
                        mask: shared.mask,
                        grads,
                        tokens: &self.tokens,
                        targets: &self.targets,
                    };
                    for call in &kernel.steps {
                        loss_sum += reference::run(&mut context, call, pass);
                    }
                }
            }
            if let (Some(profile), Some(started)) = (&mut self.profile, started) {
                profile[k] += started.elapsed().as_secs_f64();
            }
            if shared.poison {
                for slot in plan.slots.iter().flatten().filter(|s| s.last == k) {
                    self.arena[slot.offset..slot.offset + slot.len].fill(T::from_f64(f64::NAN));
                }
            }
            after(k);
        }
        loss_sum
    }

    /// Base pointer of a tensor in this worker's view of memory.
    pub(super) fn pointer(
        &mut self,
        place: Place,
        [params, grads, mask, panels]: [*mut T; 4],
    ) -> *mut u8 {
        let base: *mut T = match place.region {
            Region::Arena => self.arena.as_mut_ptr(),
            Region::Params => params,
            Region::Grads => grads,
            Region::Mask => mask,
            Region::Panels => panels,
            Region::Tokens => return self.tokens.as_mut_ptr().cast(),
            Region::Targets => return self.targets.as_mut_ptr().cast(),
        };
        base.wrapping_add(place.offset).cast()
    }
}

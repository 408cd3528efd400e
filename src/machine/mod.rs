//! The machine: a [`Plan`]'s memory, and the loop that runs its kernels in order on
//! the plan's own arena offsets — either with the reference kernels of
//! `cllm-kernels` (the interpreter: plain loops, f64 accumulation; the correctness
//! baseline) or with the JIT-compiled [`Program`]. Storage is generic: `f32` for
//! training, `f64` for the end-to-end gradient check (reference only).
//!
//! Memory: one arena (the plan's peak) for activations, saved tensors and activation
//! gradients; parameters, their gradients and AdamW's two moments each in one flat
//! buffer, in parameter order. Nothing is allocated per step on the JIT path: every
//! kernel's argument table is built once, when the program is attached.

mod reference;

use cllm_kernels::Real;
use cllm_kernels::adamw::{AdamWStep, adamw_update, grad_norm_squared};

use crate::codegen::Program;

use crate::graph::{Graph, Role, TensorId};
use crate::plan::{Phase, Plan};

/// Where a tensor's floats are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Arena,
    Params,
    Grads,
    Tokens,
    Targets,
}

/// A plan's buffers and the means to run it.
pub struct Machine<T: Real> {
    plan: Plan,
    arena: Vec<T>,
    params: Vec<T>,
    grads: Vec<T>,
    /// Offset of each parameter in `params` (and of its gradient in `grads`).
    param_offsets: Vec<usize>,
    /// (region, offset, length) of every tensor.
    places: Vec<(Region, usize, usize)>,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    /// AdamW's first and second moments, flat like `params`.
    m: Vec<T>,
    v: Vec<T>,
    /// Fill every arena tensor with NaN right after its last use (tests liveness).
    poison: bool,
    jit: Option<Bound>,
    /// Seconds spent in each kernel, when profiling.
    profile: Option<Vec<f64>>,
}

/// A compiled program with every kernel's argument table pointing into this machine.
struct Bound {
    program: Program,
    tables: Vec<Vec<*mut u8>>,
}

/// AdamW's hyperparameters for one step (weight decay applies to decayed tensors only).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step number.
    pub t: u64,
    pub grad_scale: f64,
}

impl<T: Real> Machine<T> {
    /// Allocates the arena and the parameter region (parameters start at zero).
    pub fn new(plan: Plan) -> Self {
        let graph = &plan.graph;
        let mut param_offsets = Vec::with_capacity(graph.params.len());
        let mut total = 0;
        for p in &graph.params {
            param_offsets.push(total);
            total += graph.tensor(p.tensor).len();
        }
        let places = graph
            .tensors
            .iter()
            .enumerate()
            .map(|(id, t)| match t.role {
                Role::Tokens => (Region::Tokens, 0, t.len()),
                Role::Targets => (Region::Targets, 0, t.len()),
                Role::Param(i) => (Region::Params, param_offsets[i], t.len()),
                Role::ParamGrad(i) => (Region::Grads, param_offsets[i], t.len()),
                Role::Activation | Role::Saved | Role::Grad | Role::Workspace => {
                    match plan.slots[id] {
                        Some(slot) => (Region::Arena, slot.offset, slot.len),
                        // Never touched by any kernel (e.g. the loss gradient's seed).
                        None => (Region::Arena, 0, 0),
                    }
                }
            })
            .collect();
        let n = graph.dims.batch * graph.dims.t;
        Machine {
            arena: vec![T::default(); (plan.arena.peak_bytes / 4) as usize],
            params: vec![T::default(); total],
            grads: vec![T::default(); total],
            param_offsets,
            places,
            m: vec![T::default(); total],
            v: vec![T::default(); total],
            tokens: vec![0; n],
            targets: vec![0; n],
            poison: false,
            jit: None,
            profile: None,
            plan,
        }
    }

    /// Whether kernels run JIT-compiled (else by the reference interpreter).
    pub fn is_jit(&self) -> bool {
        self.jit.is_some()
    }

    /// Seconds the attached program took to compile.
    pub fn compile_seconds(&self) -> Option<f64> {
        self.jit.as_ref().map(|b| b.program.compile_seconds)
    }

    fn pointer(&mut self, id: TensorId) -> *mut u8 {
        let (region, offset, _) = self.places[id.0];
        let base: *mut u8 = match region {
            Region::Arena => self.arena.as_mut_ptr().cast(),
            Region::Params => self.params.as_mut_ptr().cast(),
            Region::Grads => self.grads.as_mut_ptr().cast(),
            Region::Tokens => return self.tokens.as_mut_ptr().cast(),
            Region::Targets => return self.targets.as_mut_ptr().cast(),
        };
        base.wrapping_add(offset * std::mem::size_of::<T>())
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn graph(&self) -> &Graph {
        &self.plan.graph
    }

    /// Starts timing every kernel call (one clock read before and after each).
    pub fn enable_profile(&mut self) {
        self.profile = Some(vec![0.0; self.plan.kernels.len()]);
    }

    /// Seconds spent in each plan kernel since profiling started.
    pub fn profile(&self) -> Option<&[f64]> {
        self.profile.as_deref()
    }

    /// Poisons every arena tensor with NaN when its lifetime ends.
    pub fn set_poison(&mut self, poison: bool) {
        self.poison = poison;
    }

    fn param_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = self.param_offsets[i];
        start..start + self.graph().tensor(self.graph().params[i].tensor).len()
    }

    /// Parameter `i`'s values.
    pub fn param(&self, i: usize) -> &[T] {
        &self.params[self.param_range(i)]
    }

    pub fn param_mut(&mut self, i: usize) -> &mut [T] {
        let range = self.param_range(i);
        &mut self.params[range]
    }

    /// Parameter `i`'s accumulated gradient.
    pub fn grad(&self, i: usize) -> &[T] {
        &self.grads[self.param_range(i)]
    }

    /// Parameter `i`'s AdamW moments (m, v).
    pub fn moments(&self, i: usize) -> (&[T], &[T]) {
        let range = self.param_range(i);
        (&self.m[range.clone()], &self.v[range])
    }

    pub fn moments_mut(&mut self, i: usize) -> (&mut [T], &mut [T]) {
        let range = self.param_range(i);
        (&mut self.m[range.clone()], &mut self.v[range])
    }

    /// Σ g² over every parameter gradient, in a fixed order.
    pub fn grad_norm_squared(&mut self) -> f64 {
        match &self.jit {
            Some(bound) => {
                let table = [self.grads.as_mut_ptr().cast::<u8>()];
                // SAFETY: the kernel was compiled for exactly this flat gradient buffer.
                unsafe { (bound.program.grad_norm)(table.as_ptr(), [0.0f64].as_ptr()) }
            }
            None => grad_norm_squared(&self.grads),
        }
    }

    /// One AdamW update of every parameter from the accumulated gradients.
    pub fn adamw(&mut self, h: AdamW) {
        if let Some(bound) = &self.jit {
            let table = [
                self.params.as_mut_ptr().cast::<u8>(),
                self.grads.as_mut_ptr().cast(),
                self.m.as_mut_ptr().cast(),
                self.v.as_mut_ptr().cast(),
            ];
            let inv_c1 = 1.0 / (1.0 - h.beta1.powf(h.t as f64));
            let inv_c2 = 1.0 / (1.0 - h.beta2.powf(h.t as f64));
            let scalars = [
                h.lr,
                h.beta1,
                h.beta2,
                h.eps,
                h.weight_decay,
                inv_c1,
                inv_c2,
                h.grad_scale,
            ];
            // SAFETY: the kernel was compiled for exactly these flat buffers.
            unsafe { (bound.program.adamw)(table.as_ptr(), scalars.as_ptr()) };
            return;
        }
        for i in 0..self.graph().params.len() {
            let decay = if self.graph().params[i].decay {
                h.weight_decay
            } else {
                0.0
            };
            let step = AdamWStep {
                lr: h.lr,
                beta1: h.beta1,
                beta2: h.beta2,
                eps: h.eps,
                weight_decay: decay,
                t: h.t,
                grad_scale: h.grad_scale,
            };
            let range = self.param_range(i);
            let (p, g) = (&mut self.params[range.clone()], &self.grads[range.clone()]);
            adamw_update(p, g, &mut self.m[range.clone()], &mut self.v[range], &step);
        }
    }

    /// A tensor's current contents; an arena tensor's are valid only while it is live.
    pub fn tensor(&self, id: TensorId) -> &[T] {
        let (region, offset, len) = self.places[id.0];
        match region {
            Region::Arena => &self.arena[offset..offset + len],
            Region::Params => &self.params[offset..offset + len],
            Region::Grads => &self.grads[offset..offset + len],
            Region::Tokens | Region::Targets => &[],
        }
    }

    /// Sets every parameter gradient to zero (once per optimizer step).
    pub fn zero_param_grads(&mut self) {
        self.grads.fill(T::default());
    }

    /// Runs the forward kernels on one shard's `tokens` and `targets` (B·T each);
    /// returns Σ loss over scored targets. `loss_scale` is the step's 1/(scored
    /// targets), used by the fused loss kernel to write the logits' gradient.
    pub fn forward(&mut self, tokens: &[u32], targets: &[u32], loss_scale: f64) -> f64 {
        self.tokens.copy_from_slice(tokens);
        self.targets.copy_from_slice(targets);
        self.run_phase(|phase| phase == Phase::Forward, loss_scale)
    }

    /// Runs the recompute and backward kernels of the last forward, accumulating into
    /// the parameter gradients.
    pub fn backward(&mut self, loss_scale: f64) {
        self.run_phase(|phase| phase != Phase::Forward, loss_scale);
    }

    fn run_phase(&mut self, select: impl Fn(Phase) -> bool, loss_scale: f64) -> f64 {
        let mut loss_sum = 0.0;
        for k in 0..self.plan.kernels.len() {
            if !select(self.plan.kernels[k].phase) {
                continue;
            }
            let started = self.profile.as_ref().map(|_| std::time::Instant::now());
            for z in 0..self.plan.kernels[k].zero_first.len() {
                let (_, offset, len) = self.places[self.plan.kernels[k].zero_first[z].0];
                self.arena[offset..offset + len].fill(T::default());
            }
            if let Some(bound) = &self.jit {
                let scalars = [loss_scale];
                // SAFETY: the table points at this kernel's tensors, sized by the plan
                // the kernel was compiled from; the buffers never move.
                loss_sum += unsafe {
                    (bound.program.kernels[k].function)(bound.tables[k].as_ptr(), scalars.as_ptr())
                };
            } else {
                for o in 0..self.plan.kernels[k].ops.len() {
                    loss_sum += reference::run_op(self, k, o, loss_scale);
                }
            }
            if let (Some(profile), Some(started)) = (&mut self.profile, started) {
                profile[k] += started.elapsed().as_secs_f64();
            }
            if self.poison {
                self.poison_after(k);
            }
        }
        loss_sum
    }

    fn poison_after(&mut self, k: usize) {
        for slot in self.plan.slots.iter().flatten() {
            if slot.last == k {
                self.arena[slot.offset..slot.offset + slot.len].fill(T::from_f64(f64::NAN));
            }
        }
    }
}

impl Machine<f32> {
    /// Runs every kernel with `program` (compiled from this machine's plan) from now on.
    pub fn attach_jit(&mut self, program: Program) {
        assert_eq!(
            program.kernels.len(),
            self.plan.kernels.len(),
            "the program was compiled from another plan"
        );
        let tables = program
            .kernels
            .iter()
            .map(|k| k.args.iter().map(|&id| self.pointer(id)).collect())
            .collect();
        self.jit = Some(Bound { program, tables });
    }
}

// SAFETY: the raw pointers in `Bound` point into this machine's own buffers, which
// move with it and are only used through `&mut self`.
unsafe impl<T: Real> Send for Machine<T> {}

//! The reference interpreter: runs a [`Plan`] kernel by kernel with the reference
//! kernels of `cllm-kernels` (plain loops, f64 accumulation), on the plan's own arena
//! offsets. It is the correctness baseline every faster back end is checked against.
//! Storage is generic: `f32` for training, `f64` for the end-to-end gradient check.
//!
//! Memory: one arena (the plan's peak) for activations, saved tensors and activation
//! gradients; parameters and their gradients each in one flat buffer, in parameter
//! order. Nothing is allocated per step.

mod dispatch;

use cllm_kernels::Real;

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
pub struct Interpreter<T: Real> {
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
    /// Fill every arena tensor with NaN right after its last use (tests liveness).
    poison: bool,
}

impl<T: Real> Interpreter<T> {
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
                Role::Activation | Role::Saved | Role::Grad => match plan.slots[id] {
                    Some(slot) => (Region::Arena, slot.offset, slot.len),
                    // Never touched by any kernel (e.g. the loss gradient's seed).
                    None => (Region::Arena, 0, 0),
                },
            })
            .collect();
        let n = graph.dims.batch * graph.dims.t;
        Interpreter {
            arena: vec![T::default(); (plan.arena.peak_bytes / 4) as usize],
            params: vec![T::default(); total],
            grads: vec![T::default(); total],
            param_offsets,
            places,
            tokens: vec![0; n],
            targets: vec![0; n],
            poison: false,
            plan,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn graph(&self) -> &Graph {
        &self.plan.graph
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

    /// Parameter `i`'s value (mutable, for the optimizer) and gradient.
    pub fn param_and_grad(&mut self, i: usize) -> (&mut [T], &[T]) {
        let range = self.param_range(i);
        (&mut self.params[range.clone()], &self.grads[range])
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
            for z in 0..self.plan.kernels[k].zero_first.len() {
                let (_, offset, len) = self.places[self.plan.kernels[k].zero_first[z].0];
                self.arena[offset..offset + len].fill(T::default());
            }
            for o in 0..self.plan.kernels[k].ops.len() {
                loss_sum += dispatch::run_op(self, k, o, loss_scale);
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

//! Admission: what the spec's sizes alone say about memory, checked before anything is
//! built. Building the graph of 10⁸ layers, or the tile lists of a 10⁸-token context,
//! ran out of memory inside the planner; a spec that cannot fit now stops here, in
//! microseconds, naming its keys.

use super::{BYTES_PER_FLOAT, PlanError};
use crate::spec::Spec;

/// Bytes of the planner's own tables per layer (graph, kernels, IR, slots), as measured
/// (≈ 40 KiB a layer at 1 536 layers) with room to spare.
const PLANNER_BYTES_PER_LAYER: u128 = 64 << 10;

/// Copies of the parameters a run holds: the values, AdamW's two moments, and
/// `gradient_buffers` (`grads.rs`: O(workers × log₂ shards)).
pub fn state_copies(gradient_buffers: u64) -> u64 {
    3 + gradient_buffers
}

/// The memory a plan may use: `plan.memory_budget`, or the machine's memory if that is
/// smaller (a budget above what the machine has does not make the memory exist; every
/// size the plan allocates is checked against it).
pub fn budget(spec: &Spec) -> u64 {
    let machine = crate::peak::machine_memory().unwrap_or(u64::MAX);
    spec.plan.memory_budget.min(machine)
}

/// Bytes of the parameter state: `state_copies` of every parameter (fits in u64 once
/// admitted).
pub fn fixed_bytes(spec: &Spec, gradient_buffers: u64) -> u64 {
    let bytes = BYTES_PER_FLOAT as u128
        * state_copies(gradient_buffers) as u128
        * spec.model.parameter_count();
    bytes.min(u64::MAX as u128) as u64
}

/// Refuses a model whose parameter state and planner tables cannot fit the budget: a
/// lower bound (the model's parameters, times parameters + a gradient buffer per
/// worker + AdamW's two moments; the planner's tables; a T×T mask for a sparse
/// pattern; the causal tile lists) in 128-bit arithmetic, so no size overflows.
pub fn admit(spec: &Spec, workers: u64) -> Result<(), PlanError> {
    let m = &spec.model;
    let (layers, context) = (m.layers as u128, m.context as u128);
    let blocks = context.div_ceil(32);
    let float = BYTES_PER_FLOAT as u128;
    let mask = if m.attention.masked() {
        float * context * context
    } else {
        0
    };
    // A step's batch buffers (tokens and targets, u32) and the evaluation's.
    let batches = 8 * (spec.train.batch as u128 + spec.train.micro_batch() as u128) * context;
    let needed = fixed_bytes(spec, workers) as u128
        + batches
        + layers * PLANNER_BYTES_PER_LAYER
        + 8 * blocks * (blocks + 1) / 2
        + mask;
    let machine = crate::peak::machine_memory().unwrap_or(u64::MAX);
    // Cut into pipeline stages, the model may use a budget a stage.
    let limit = budget(spec).saturating_mul(spec.plan.stages.max(1));
    if needed > limit as u128 {
        return Err(PlanError::ModelOverBudget {
            layers: m.layers,
            width: m.width,
            context: m.context,
            needed: needed.min(u64::MAX as u128) as u64,
            limit,
            by_machine: machine < spec.plan.memory_budget,
        });
    }
    Ok(())
}

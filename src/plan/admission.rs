//! Admission: what the spec's sizes alone say about memory, checked before anything is
//! built. Building the graph of 10⁸ layers, or the tile lists of a 10⁸-token context,
//! ran out of memory inside the planner; a spec that cannot fit now stops here, in
//! microseconds, naming its keys.

use super::PlanError;
use crate::spec::{Attention, Spec};

/// Bytes of the planner's own tables per layer (graph, kernels, IR, slots), as measured
/// (≈ 40 KiB a layer at 1 536 layers) with room to spare.
const PLANNER_BYTES_PER_LAYER: u128 = 64 << 10;

/// Refuses a model whose parameter state and planner tables cannot fit the budget: a
/// lower bound (12·C² parameters per layer and the embeddings, times parameters +
/// per-shard gradients + AdamW's two moments; the planner's tables; a T×T mask for a
/// sparse pattern; the causal tile lists) in 128-bit arithmetic, so no size overflows.
pub fn admit(spec: &Spec, shards: u64) -> Result<(), PlanError> {
    let m = &spec.model;
    let (layers, width, context) = (m.layers as u128, m.width as u128, m.context as u128);
    let params = layers * 12 * width * width + (spec.model.vocab_size() as u128 + context) * width;
    let blocks = context.div_ceil(32);
    let mask = match m.attention {
        Attention::Dense => 0,
        _ => 4 * context * context,
    };
    // A step's batch buffers (tokens and targets, u32) and the evaluation's.
    let batches = 8 * (spec.train.batch as u128 + spec.train.micro_batch() as u128) * context;
    let needed = 4 * (3 + shards as u128) * params
        + batches
        + layers * PLANNER_BYTES_PER_LAYER
        + 8 * blocks * (blocks + 1) / 2
        + mask;
    // A budget above what the machine has does not make the memory exist.
    let machine = crate::peak::machine_memory().unwrap_or(u64::MAX);
    let limit = spec.plan.memory_budget.min(machine);
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

//! FLOPs and bytes moved per kernel, counted from the kernel IR the plan lowered: each
//! step's own count (`Step::flops`, beside the step's definition) and the tensors its
//! slots bind; the shapes a step carries are the shapes the back ends run.

use std::collections::BTreeSet;

use super::ir::StepCall;
use crate::graph::Graph;

/// (FLOPs, bytes) of a kernel: FLOPs summed over its steps; bytes of every distinct
/// tensor its steps touch (a fused intermediate is counted, since the reference
/// materialises it).
pub fn kernel_cost(graph: &Graph, steps: &[StepCall]) -> (u64, u64) {
    let flops = steps.iter().map(|s| s.flops()).sum();
    let mut touched = BTreeSet::new();
    for step in steps {
        step.visit(|_, &tensor| {
            touched.insert(tensor);
        });
    }
    let bytes = touched
        .iter()
        .map(|&id| super::BYTES_PER_FLOAT * graph.tensor(id).len() as u64)
        .sum();
    (flops, bytes)
}

//! When each part of a shard's gradient is final: the fact the exchange overlapped with
//! backward is built on (`machine/overlap.rs` sends each owner's piece after the kernel
//! named here; `scaling.rs` prices what stays exposed).

use std::ops::Range;

use super::{Phase, Plan};
use crate::graph::Role;

/// For each parameter chunk, the last kernel (index into `plan.kernels`) that writes
/// its gradient: once it has run in a shard's last pass, the chunk's gradient in that
/// shard is final. 0 for a chunk no kernel writes.
pub fn final_kernels(plan: &Plan) -> Vec<usize> {
    let graph = &plan.graph;
    let mut offsets = Vec::with_capacity(graph.params.len());
    let mut total = 0;
    for p in &graph.params {
        offsets.push(total);
        total += graph.tensor(p.tensor).len();
    }
    let chunks = &plan.param_chunks;
    let mut last = vec![0usize; chunks.len()];
    for (k, kernel) in plan.kernels.iter().enumerate() {
        if kernel.phase == Phase::Forward {
            continue;
        }
        for step in &kernel.steps {
            step.visit(|slot, tensor| {
                let Role::ParamGrad(i) = graph.tensor(*tensor).role else {
                    return;
                };
                if !slot.writes {
                    return;
                }
                let written = offsets[i]..offsets[i] + graph.tensor(*tensor).len();
                for (c, chunk) in chunks.iter().enumerate() {
                    if chunk.offset < written.end && written.start < chunk.offset + chunk.len {
                        last[c] = last[c].max(k);
                    }
                }
            });
        }
    }
    last
}

/// Owners in the order backward finishes their runs of chunks (`grads::owners`): (the
/// kernel after which the run is final, owner), sorted, ties in owner order.
pub fn finishing_order(plan: &Plan, runs: &[Range<usize>]) -> Vec<(usize, usize)> {
    let last = final_kernels(plan);
    let mut order: Vec<(usize, usize)> = (runs.iter().enumerate())
        .map(|(s, run)| (run.clone().map(|i| last[i]).max().unwrap_or(0), s))
        .collect();
    order.sort();
    order
}

/// For each owner of `runs`, the share of one pass's FLOPs that runs after its run is
/// final (the time its pieces have to travel while backward goes on).
pub fn time_left(plan: &Plan, runs: &[Range<usize>]) -> Vec<f64> {
    let total: u64 = plan.kernels.iter().map(|k| k.flops).sum();
    let mut left = vec![0.0; runs.len()];
    for (k, s) in finishing_order(plan, runs) {
        let after: u64 = plan.kernels[k + 1..].iter().map(|k| k.flops).sum();
        left[s] = after as f64 / total.max(1) as f64;
    }
    left
}

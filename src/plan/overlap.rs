//! When each part of a shard's gradient is final: the fact the owners' cut
//! (`owners.rs`) and the exchange overlapped with backward are built on
//! (`machine/overlap.rs` sends each part after the kernel named here; `scaling.rs`
//! prices what stays exposed).

use super::{Phase, Plan};
use crate::graph::Role;

/// For each parameter chunk, the last kernel (index into `plan.kernels`) that writes
/// its gradient: once it has run in a shard's last pass, the chunk's gradient in that
/// shard is final. 0 for a chunk no kernel writes.
pub fn final_kernels(plan: &Plan) -> Vec<usize> {
    let graph = &plan.graph;
    let offsets = graph.param_offsets();
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

/// For each kernel k, the share of one pass's FLOPs that runs after it: the time a
/// part final after k has to travel while backward goes on.
pub fn share_after(plan: &Plan) -> Vec<f64> {
    let total: u64 = plan.kernels.iter().map(|k| k.flops).sum();
    let mut after = 0u64;
    let mut shares = vec![0.0; plan.kernels.len()];
    for (k, kernel) in plan.kernels.iter().enumerate().rev() {
        shares[k] = after as f64 / total.max(1) as f64;
        after += kernel.flops;
    }
    shares
}

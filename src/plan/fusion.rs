//! Fusion passes: each merges kernels whose ops run back to back on the same data into
//! one kernel. Lowering (`ir.rs`) then makes a matmul and its GELU one step (bias and
//! GELU in the GEMM's epilogue; the GELU backward in the dx product's epilogue), so
//! that intermediate is never reread; the other groups (residual + LayerNorm, logits +
//! softmax-cross-entropy) still pass theirs through memory, in one kernel call. Each
//! is a `Plan → Plan` that leaves the numbers unchanged; the kernels' IR, lifetimes
//! and offsets are derived once, by the later passes (`lower`, `allocate`).

use super::{Kernel, Plan};
use crate::graph::OpKind;

/// The fuse pass: reads the kernels' ops; merges the groups below, in this order.
pub fn fuse(plan: Plan) -> Plan {
    let plan = fuse_softmax_xent(plan);
    let plan = fuse_bias_gelu(plan);
    fuse_residual_layernorm(plan)
}

/// Merges kernel `i + 1` into kernel `i` wherever `merge(a, b)` names the result.
fn merge_adjacent(
    mut plan: Plan,
    pass: &'static str,
    merge: impl Fn(&Kernel, &Kernel) -> Option<String>,
) -> Plan {
    let mut kernels: Vec<Kernel> = Vec::with_capacity(plan.kernels.len());
    for kernel in plan.kernels {
        if let Some(last) = kernels.last_mut()
            && last.phase == kernel.phase
            && let Some(name) = merge(last, &kernel)
        {
            last.name = name;
            last.ops.extend(kernel.ops);
            continue;
        }
        kernels.push(kernel);
    }
    plan.kernels = kernels;
    plan.passes.push(pass);
    plan
}

/// The kernel's only op, if it has exactly one.
fn single(kernel: &Kernel) -> Option<&crate::graph::Op> {
    match kernel.ops.as_slice() {
        [op] => Some(op),
        _ => None,
    }
}

/// logits = x·Wᵀ, softmax, cross-entropy and its gradient in one kernel: the
/// gradient is written while the probabilities are at hand, so they never outlive
/// the kernel (the runtime knows the loss scale before the forward starts).
pub fn fuse_softmax_xent(mut plan: Plan) -> Plan {
    let Some(backward) = plan
        .kernels
        .iter()
        .position(|k| single(k).is_some_and(|op| op.kind == OpKind::SoftmaxXentBackward))
    else {
        return plan;
    };
    let moved = plan.kernels.remove(backward);
    let Some(forward) = plan
        .kernels
        .iter()
        .position(|k| single(k).is_some_and(|op| op.kind == OpKind::SoftmaxXent))
    else {
        plan.kernels.insert(backward, moved);
        return plan;
    };
    plan.kernels[forward].ops.extend(moved.ops);
    plan.kernels[forward].name = "softmax_xent_fused".into();
    if forward > 0
        && single(&plan.kernels[forward - 1])
            .is_some_and(|op| op.kind == OpKind::Matmul { bias: false })
    {
        let matmul = plan.kernels.remove(forward - 1);
        let fused = &mut plan.kernels[forward - 1];
        fused.ops.splice(0..0, matmul.ops);
        fused.name = "logits_softmax_xent".into();
    }
    plan.passes.push("fuse_softmax_xent");
    plan
}

/// Matmul + bias + GELU epilogue, and in backward GELU's gradient as the epilogue of
/// the matmul backward that computes GELU's output gradient (`fc_proj`'s input
/// gradient): each tile of it, still in L1, is multiplied by GELU's derivative.
pub fn fuse_bias_gelu(plan: Plan) -> Plan {
    merge_adjacent(plan, "fuse_bias_gelu", |a, b| {
        let (first, second) = (single(a)?, single(b)?);
        match (first.kind, second.kind) {
            (OpKind::Matmul { bias: true }, OpKind::Gelu)
                if second.inputs[0] == first.outputs[0] =>
            {
                Some("matmul_bias_gelu".into())
            }
            (OpKind::MatmulBackward { .. }, OpKind::GeluBackward)
                if second.inputs[0] == first.outputs[0] =>
            {
                Some("matmul_backward_gelu_backward".into())
            }
            _ => None,
        }
    })
}

/// Residual add + the LayerNorm that reads its sum.
pub fn fuse_residual_layernorm(plan: Plan) -> Plan {
    merge_adjacent(plan, "fuse_residual_layernorm", |a, b| {
        let (first, second) = (single(a)?, single(b)?);
        match (first.kind, second.kind) {
            (OpKind::Residual, OpKind::LayerNorm { .. })
                if second.inputs[0] == first.outputs[0] =>
            {
                Some("residual_layernorm".into())
            }
            _ => None,
        }
    })
}

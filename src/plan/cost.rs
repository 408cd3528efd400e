//! FLOPs and bytes moved per op and per kernel (forward counts; backward ≈ 2×).

use std::collections::BTreeSet;

use crate::graph::{Graph, Op, OpKind};

/// Floating-point operations of one op, counting a multiply-add as 2.
pub fn op_flops(graph: &Graph, op: &Op) -> u64 {
    let d = graph.dims;
    let n = (d.batch * d.t) as u64;
    let len = |i: usize| graph.tensor(op.inputs[i]).len() as u64;
    match op.kind {
        OpKind::Matmul { .. } => 2 * len(0) * (len(1) / (len(0) / n)),
        OpKind::MatmulBackward { .. } => 4 * len(1) * (len(2) / (len(1) / n)) + len(0),
        // QKᵀ and P·V over the tiles attention visits (the causal triangle, or a
        // block-sparse pattern's list); backward recomputes QKᵀ, then dO·Vᵀ, dS·K,
        // dSᵀ·Q and Pᵀ·dO: five products.
        OpKind::Attention { .. } => {
            (4.0 * (d.batch * d.t * d.t * d.c) as f64 * graph.attention_fraction) as u64
        }
        OpKind::AttentionBackward { .. } => {
            (10.0 * (d.batch * d.t * d.t * d.c) as f64 * graph.attention_fraction) as u64
        }
        OpKind::LayerNorm { .. } => 8 * len(0),
        OpKind::LayerNormBackward => 12 * len(1),
        OpKind::Gelu => 10 * len(0),
        OpKind::GeluBackward => 16 * len(1),
        OpKind::Residual => len(0),
        OpKind::ResidualBackward => 2 * len(0),
        OpKind::SoftmaxXent => 5 * len(0),
        OpKind::SoftmaxXentBackward => 2 * len(0),
        OpKind::Embedding => len(0) * d.c as u64,
        OpKind::EmbeddingBackward => 2 * len(0),
    }
}

/// (FLOPs, bytes) of a kernel: FLOPs summed; bytes of every distinct tensor it
/// touches (a fused intermediate is counted, since the reference materialises it).
pub fn kernel_cost(graph: &Graph, ops: &[Op]) -> (u64, u64) {
    let flops = ops.iter().map(|op| op_flops(graph, op)).sum();
    let touched: BTreeSet<_> = ops
        .iter()
        .flat_map(|op| op.inputs.iter().chain(&op.outputs))
        .collect();
    let bytes = touched
        .iter()
        .map(|&&id| 4 * graph.tensor(id).len() as u64)
        .sum();
    (flops, bytes)
}

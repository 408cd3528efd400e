//! FLOPs and bytes moved per kernel, counted from the kernel IR the plan lowered: the
//! shapes a step carries are the shapes the back ends run, so nothing is re-derived.

use std::collections::BTreeSet;

use super::ir::{Step, StepCall};
use crate::graph::Graph;

/// Floating-point operations of one step, counting a multiply-add as 2.
pub fn step_flops(step: &Step) -> u64 {
    let u = |x: usize| x as u64;
    match step {
        Step::Matmul {
            rows, c, oc, gelu, ..
        } => 2 * u(rows * c * oc) + if *gelu { 10 * u(rows * oc) } else { 0 },
        Step::MatmulBackward { rows, c, oc, .. } => 4 * u(rows * c * oc) + u(rows * oc),
        // QKᵀ and P·V over the tiles attention visits (the causal triangle, or a
        // block-sparse pattern's list); backward recomputes QKᵀ, then dO·Vᵀ, dS·K,
        // dSᵀ·Q and Pᵀ·dO: five products.
        Step::Attention { shape, blocks, .. } | Step::AttentionBackward { shape, blocks, .. } => {
            let products = if matches!(step, Step::Attention { .. }) {
                4.0
            } else {
                10.0
            };
            let t = shape.t_len;
            let square = (shape.batch * t * t * shape.channels) as f64;
            (products * square * blocks.fraction(t)) as u64
        }
        Step::LayerNorm { rows, c, .. } => 8 * u(rows * c),
        Step::LayerNormBackward { rows, c } => 12 * u(rows * c),
        Step::Gelu { n } => 10 * u(*n),
        Step::GeluBackward { n } => 16 * u(*n),
        Step::Residual { n } => u(*n),
        Step::ResidualBackward { n } => 2 * u(*n),
        Step::SoftmaxXent { rows, v } => 5 * u(rows * v),
        Step::SoftmaxXentBackward { rows, v } => 2 * u(rows * v),
        Step::Embedding { batch, t, c } => u(batch * t * c),
        Step::EmbeddingBackward { batch, t, c } => 2 * u(batch * t * c),
        // The optimizer's steps are not plan kernels (the step's FLOP count leaves them
        // out); counted here as the adds of the tree and Σ g², and AdamW's ~12 per
        // parameter (two moments, the bias-corrected update, decay).
        Step::ShardGradSum { shards, len } => u(shards.saturating_sub(1) * len + 2 * len),
        Step::AdamW { segments } => 12 * segments.iter().map(|s| u(s.1)).sum::<u64>(),
    }
}

/// (FLOPs, bytes) of a kernel: FLOPs summed over its steps; bytes of every distinct
/// tensor its steps touch (a fused intermediate is counted, since the reference
/// materialises it).
pub fn kernel_cost(graph: &Graph, steps: &[StepCall]) -> (u64, u64) {
    let flops = steps.iter().map(|s| step_flops(&s.step)).sum();
    let touched: BTreeSet<_> = steps
        .iter()
        .flat_map(|s| s.args.iter().map(|a| a.tensor))
        .collect();
    let bytes = touched
        .iter()
        .map(|&id| 4 * graph.tensor(id).len() as u64)
        .sum();
    (flops, bytes)
}

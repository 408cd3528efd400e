//! `cllm plan`'s report: kernels, the arena map, keep or recompute, memory.

use std::fmt::Write as _;

use super::{BYTES_PER_FLOAT, Phase, Plan, human_bytes};
use crate::spec::Spec;

/// The attention pattern: its reach, keys per query, density and blocks.
fn attention(w: &mut String, spec: &Spec, plan: &Plan) {
    let written = spec.model.attention.to_cllm();
    let tiles = |b: &cllm_kernels::attention::BlockLists| {
        let count = b.lists.iter().map(Vec::len).sum::<usize>();
        format!(
            "{count} tile{} of {}×{} per head, {:.1}% of the T×T square",
            if count == 1 { "" } else { "s" },
            b.block,
            b.block,
            100.0 * b.fraction(plan.graph.dims.t)
        )
    };
    let Some(pattern) = &plan.pattern else {
        let kernels = tiles(&plan.attention_blocks);
        let _ = writeln!(
            w,
            "attention: {written} (every earlier position): the causal triangle, {kernels}"
        );
        return;
    };
    let (min, mean, max) = pattern.keys_per_query();
    let _ = writeln!(w, "attention: {written}");
    if let Some(reach) = &pattern.reach {
        let _ = writeln!(
            w,
            "  LLL-reduced basis (δ = 0.99): {:?}; {} lattice vectors with 0 < ‖v‖ ≤ radius: {:?}",
            reach.reduced_basis,
            reach.vectors.len(),
            reach.vectors
        );
    }
    let blocks = pattern.blocks(64.min(pattern.t));
    let _ = writeln!(
        w,
        "  keys per query: min {min}, mean {mean:.1}, max {max}; density {:.1}% of dense causal",
        100.0 * pattern.density()
    );
    let _ = writeln!(
        w,
        "  {}×{} blocks: {} of dense's {} have a kept key ({} need no mask beyond causal)",
        blocks.block, blocks.block, blocks.blocks, blocks.dense_blocks, blocks.full
    );
    let b = &plan.attention_blocks;
    let kernels = if b.is_causal() {
        format!(
            "the causal triangle with the pattern's mask (over half of the tiles are needed): {}",
            tiles(b)
        )
    } else {
        format!("block-sparse: {}", tiles(b))
    };
    let _ = writeln!(w, "  kernels: {kernels}");
}

/// The human-readable report.
pub fn describe(name: &str, spec: &Spec, plan: &Plan) -> String {
    let d = plan.graph.dims;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "plan for {name}: {} layers, width {}, {} heads, context {}, vocab {}",
        d.layers, d.c, d.heads, d.t, d.vocab
    );
    let _ = writeln!(
        w,
        "batch {} = {} micro-batch(es) × {} shard(s) × {} sequence(s); {} thread(s), {} worker arena(s){}",
        spec.train.batch,
        spec.train.accumulate,
        plan.shards,
        d.batch,
        plan.threads,
        plan.workers,
        if plan.threads > plan.workers {
            format!(
                " (fewer shards than threads: each GEMM splits over {} threads)",
                plan.threads / plan.workers
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        w,
        "gradients: {} buffer(s) of {} for {} shard(s), added in a fixed tree over shards as they finish, in {} parameter chunk(s) of up to {} floats; AdamW over the same chunks",
        plan.grad_buffers,
        human_bytes(plan.gradient_bytes() / plan.grad_buffers.max(1) as u64),
        plan.shards,
        plan.param_chunks.len(),
        super::PARAM_CHUNK
    );
    let _ = writeln!(w, "passes: {}", plan.passes.join(" → "));
    attention(w, spec, plan);
    let _ = writeln!(w);

    let _ = writeln!(w, "kernels of one shard (B={}, T={}):", d.batch, d.t);
    let _ = writeln!(
        w,
        "  {:>3}  {:<30} {:<9} {:<44} {:>18} {:>9} {:>8} {:>7}",
        "#", "kernel", "phase", "ops", "output", "GFLOP", "MB", "FLOP/B"
    );
    for (k, kernel) in plan.kernels.iter().enumerate() {
        let ops: Vec<&str> = kernel.ops.iter().map(|op| op.kind.name()).collect();
        let last = kernel.ops.last().expect("a kernel has ops");
        let shape = format!("{:?}", plan.graph.tensor(last.outputs[0]).shape);
        let phase = match kernel.phase {
            Phase::Forward => "forward",
            Phase::Recompute => "recompute",
            Phase::Backward => "backward",
        };
        let _ = writeln!(
            w,
            "  {k:>3}  {:<30} {phase:<9} {:<44} {shape:>18} {:>9.4} {:>8.2} {:>7.1}",
            kernel.name,
            ops.join("+"),
            kernel.flops as f64 / 1e9,
            kernel.bytes as f64 / 1e6,
            kernel.flops as f64 / kernel.bytes.max(1) as f64
        );
    }
    let step_flops = plan.step_flops(spec.train.accumulate);
    let _ = writeln!(
        w,
        "step: {} shard pass(es) × {:.3} GFLOP = {:.3} GFLOP per optimizer step (forward + backward)\n",
        plan.shards as u64 * spec.train.accumulate,
        step_flops as f64 / (plan.shards as u64 * spec.train.accumulate) as f64 / 1e9,
        step_flops as f64 / 1e9
    );

    let _ = writeln!(w, "arena of one worker:");
    let _ = writeln!(
        w,
        "  {:<32} {:<18} {:>10} {:>10}  live",
        "buffer", "shape", "offset", "size"
    );
    let mut slots: Vec<(usize, _)> = plan
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    slots.sort_by_key(|(i, s)| (s.first, *i));
    for (i, slot) in &slots {
        let t = &plan.graph.tensors[*i];
        let _ = writeln!(
            w,
            "  {:<32} {:<18} {:>10} {:>10}  {}..{}",
            t.name,
            format!("{:?}", t.shape),
            human_bytes(BYTES_PER_FLOAT * slot.offset as u64),
            human_bytes(BYTES_PER_FLOAT * slot.len as u64),
            slot.first,
            slot.last
        );
    }
    let a = plan.arena;
    let _ = writeln!(
        w,
        "  peak {} = {:.2} × the lower bound {} (most bytes live at once) = {:.0}% of the naive sum {}\n",
        human_bytes(a.peak_bytes),
        a.peak_bytes as f64 / a.lower_bound_bytes.max(1) as f64,
        human_bytes(a.lower_bound_bytes),
        100.0 * a.peak_bytes as f64 / a.naive_bytes.max(1) as f64,
        human_bytes(a.naive_bytes)
    );

    let first_backward = plan
        .kernels
        .iter()
        .position(|k| k.phase != Phase::Forward)
        .unwrap_or(plan.kernels.len());
    let kept: Vec<&str> = slots
        .iter()
        .filter(|(i, s)| {
            s.first < first_backward
                && s.last >= first_backward
                && !plan.graph.tensors[*i].name.starts_with('d')
        })
        .map(|(i, _)| plan.graph.tensors[*i].name.as_str())
        .collect();
    let _ = writeln!(w, "kept for backward ({}): {}", kept.len(), kept.join(", "));
    let _ = writeln!(
        w,
        "  (`encoded`, the gathered token + position embeddings, is computed once per step and kept)"
    );
    let recomputed = if plan.recomputed.is_empty() {
        "none".to_string()
    } else {
        plan.recomputed.join(", ")
    };
    let _ = writeln!(
        w,
        "recomputed in backward ({}): {recomputed}",
        plan.recomputed.len()
    );
    if !plan.panels.is_empty() {
        let _ = writeln!(
            w,
            "bf16 weight panels: {} weights rounded to bf16 once per step, each in the forward product's layout (weightᵀ) and the input gradient's (weight): {}",
            plan.panels.len(),
            human_bytes(super::panels::panel_bytes(plan))
        );
    }
    let panels = match plan.panels.is_empty() {
        true => "",
        false => ", bf16 weight panels",
    };
    let _ = writeln!(
        w,
        "memory: {} fixed (parameters, AdamW m and v, {} of gradient buffers{panels}) + {} × {} arena = {} of the {} budget",
        human_bytes(plan.fixed_bytes),
        human_bytes(plan.gradient_bytes()),
        plan.workers,
        human_bytes(a.peak_bytes),
        human_bytes(plan.total_bytes()),
        human_bytes(plan.memory_budget)
    );
    out
}

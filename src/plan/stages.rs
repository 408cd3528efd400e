//! `cllm plan --stages P`: how the layers cut into P pipeline stages, and what a 1F1B
//! schedule over them costs beside data parallelism on as many processes. The run
//! uses the same cut (`pipeline.rs`, at fixed nominal rates so every rank cuts alike);
//! `docs/scaling.md` gives the verdict the prediction supports.
//!
//! Every kernel, parameter and activation belongs to one *unit*: the embeddings, block
//! `h.{l}`, or the head (final LayerNorm, logits, loss), by the name of what it writes
//! (a gradient `dX` by X's). A kernel costs t = max(FLOPs / F, bytes / B) per
//! micro-batch (F, B one process's FLOP rate and memory bandwidth). The blocks are cut
//! into P contiguous stages minimising the slowest stage, the embeddings riding with
//! the first and the head with the last (a tied head's `wte` is the first stage's: its
//! gradient from the head would travel back to it).
//!
//! 1F1B (PipeDream-flush) over m micro-batches — the step's shards — runs m + P − 1
//! slots, each the slowest stage's forward + backward and the transfers of a slot
//! (what the busiest stage sends per micro-batch, α per message + bytes/β: the
//! boundary's activations forward — two B·T·C tensors with a fused residual +
//! LayerNorm at the cut — its gradient back, and a tied head's `wte` gradient,
//! V·C floats, from the last stage to the first); then, as built, each stage runs
//! AdamW on the parameters it finishes (seven streams of 4 bytes per parameter) and
//! the updated parameters go to every stage (an all-gather):
//!
//!   step(P)   = (m + P − 1) · (max_s t_s + max_s send_s) + max_s adamw_s + gather
//!   bubble    = (P − 1) / (m + P − 1)
//!   efficiency = step(1) / (P · step(P))
//!
//! Stage s holds at most min(P − s, m) micro-batches' activations at once (1F1B's
//! bound), so activation memory grows with P, not with m.

use std::ops::Range;

use super::Plan;
use super::scaling::Network;
use crate::graph::Role;

/// What a tensor or kernel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Embeddings,
    Block(usize),
    Head,
}

/// The unit of a tensor name (a gradient `dX` by X's).
pub fn unit_of(name: &str) -> Unit {
    let name = match name.strip_prefix('d') {
        Some(rest) if rest.starts_with("h.") || is_embedding(rest) || rest.starts_with("ln_f") => {
            rest
        }
        _ => name,
    };
    if let Some(rest) = name.strip_prefix("h.") {
        let layer = rest.split('.').next().and_then(|l| l.parse().ok());
        if let Some(layer) = layer {
            return Unit::Block(layer);
        }
    }
    if is_embedding(name) {
        Unit::Embeddings
    } else {
        Unit::Head
    }
}

fn is_embedding(name: &str) -> bool {
    matches!(name, "tokens" | "wte" | "wpe" | "encoded")
}

/// Per-unit costs of one micro-batch (seconds), parameters and activations (floats).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitCosts {
    pub seconds: f64,
    pub params: usize,
    pub activations: usize,
}

/// The embeddings', each block's and the head's costs, from the plan's kernels (per
/// shard) and graph, at `flop_rate` FLOP/s and `bytes_per_s`.
pub fn unit_costs(
    plan: &Plan,
    flop_rate: f64,
    bytes_per_s: f64,
) -> (UnitCosts, Vec<UnitCosts>, UnitCosts) {
    let graph = &plan.graph;
    let layers = graph.dims.layers;
    // Embeddings, the blocks, the head: indices 0, 1..=layers, layers + 1.
    let mut units = vec![UnitCosts::default(); layers + 2];
    let index = |unit: Unit| match unit {
        Unit::Embeddings => 0,
        Unit::Block(l) => 1 + l.min(layers.saturating_sub(1)),
        Unit::Head => layers + 1,
    };
    for kernel in &plan.kernels {
        let Some(first) = kernel.ops.iter().flat_map(|op| op.outputs.iter()).next() else {
            continue;
        };
        let seconds = (kernel.flops as f64 / flop_rate).max(kernel.bytes as f64 / bytes_per_s);
        units[index(unit_of(&graph.tensor(*first).name))].seconds += seconds;
    }
    for tensor in &graph.tensors {
        let unit = &mut units[index(unit_of(&tensor.name))];
        match tensor.role {
            Role::Param(_) => unit.params += tensor.len(),
            Role::Activation | Role::Saved => unit.activations += tensor.len(),
            _ => {}
        }
    }
    let head = units.pop().expect("layers + 2 units");
    let embeddings = units.remove(0);
    (embeddings, units, head)
}

/// The cut of `costs` (each block's seconds, the first carrying the embeddings and the
/// last the head) into `stages` contiguous ranges minimising the largest sum; ties go
/// to the cut with the earlier boundaries. `None` when there are fewer blocks than
/// stages (or no stages).
pub fn cut(costs: &[f64], stages: usize) -> Option<Vec<Range<usize>>> {
    let n = costs.len();
    if stages == 0 || stages > n {
        return None;
    }
    let prefix: Vec<f64> = std::iter::once(0.0)
        .chain(costs.iter().scan(0.0, |sum, c| {
            *sum += c;
            Some(*sum)
        }))
        .collect();
    let sum = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[p][i]: the smallest largest stage of blocks 0..i cut into p stages; from[p][i]
    // where its last stage starts.
    let mut best = vec![vec![f64::INFINITY; n + 1]; stages + 1];
    let mut from = vec![vec![0usize; n + 1]; stages + 1];
    best[0][0] = 0.0;
    for p in 1..=stages {
        for i in p..=n {
            for j in (p - 1)..i {
                let worst = best[p - 1][j].max(sum(j, i));
                if worst < best[p][i] {
                    best[p][i] = worst;
                    from[p][i] = j;
                }
            }
        }
    }
    let mut ranges = Vec::with_capacity(stages);
    let mut end = n;
    for p in (1..=stages).rev() {
        let start = from[p][end];
        ranges.push(start..end);
        end = start;
    }
    ranges.reverse();
    Some(ranges)
}

/// One stage of the cut.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub blocks: Range<usize>,
    /// Forward + backward of one micro-batch, seconds.
    pub seconds: f64,
    pub params: usize,
    /// Floats of the stage's own arena, one per micro-batch in flight
    /// (`pipeline.rs`: the tensors its kernels touch and its messages carry).
    pub activations: usize,
    /// Bytes the stage holds as built without replicas (`pipeline.rs::StagePlan::held`):
    /// the whole model's parameters, its own parameters' moments, gradient buffers of
    /// only what its kernels write, and its arenas in flight.
    pub holds_bytes: u64,
    /// Micro-batches in flight at once under 1F1B.
    pub in_flight: usize,
    /// Floats this stage sends the others per micro-batch (its first; later
    /// micro-batches of a shard may carry a shared weight's gradient on as well), and
    /// in how many messages (`plan/pipeline.rs`).
    pub sent_floats: usize,
    pub messages: usize,
}

/// The prediction for `stages` stages over `micro_batches`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
    pub bubble: f64,
    /// The parameters two stages touch, sent by their updater after AdamW.
    pub share_s: f64,
    pub step_s: f64,
    /// The same step on one process.
    pub single_s: f64,
    pub efficiency: f64,
}

/// Cuts the plan's blocks into `stages` and predicts a 1F1B step over
/// `micro_batches`; `None` when the model has fewer blocks than stages.
pub fn predict(
    plan: &Plan,
    stages: usize,
    micro_batches: usize,
    (flop_rate, bytes_per_s): (f64, f64),
    net: &Network,
) -> Option<Pipeline> {
    let (embeddings, blocks, head) = unit_costs(plan, flop_rate, bytes_per_s);
    // The run's own cut and what crosses it (fixed rates: every rank cuts alike).
    let division = super::pipeline::StagePlan::new(plan, stages)?;
    let ranges = division.blocks.clone();
    let adamw = |params: usize| 28.0 * params as f64 / bytes_per_s;
    let stages: Vec<Stage> = ranges
        .iter()
        .enumerate()
        .map(|(s, range)| {
            let mut units: Vec<&UnitCosts> = blocks[range.clone()].iter().collect();
            if s == 0 {
                units.push(&embeddings);
            }
            if range.end == blocks.len() {
                units.push(&head);
            }
            let sent = division.first.iter().filter(|m| m.from == s);
            let in_flight = (ranges.len() - s).min(micro_batches);
            let accumulate = micro_batches / plan.shards;
            let held = division.held(plan, s, 0..plan.shards, accumulate, None);
            Stage {
                holds_bytes: held.state_bytes
                    + held.checkpoint_bytes
                    + in_flight as u64 * held.arena_bytes,
                sent_floats: sent.clone().map(|m| m.floats).sum(),
                messages: sent.count(),
                blocks: range.clone(),
                seconds: units.iter().map(|u| u.seconds).sum(),
                params: units.iter().map(|u| u.params).sum(),
                activations: (held.arena_bytes / 4) as usize,
                in_flight,
            }
        })
        .collect();
    let p = stages.len() as f64;
    let m = micro_batches as f64;
    // Each slot waits for the busiest stage's sends (α per message, its bytes at β).
    let transfer = (stages.iter())
        .map(|s| s.messages as f64 * net.latency_s + 4.0 * s.sent_floats as f64 / net.bytes_per_s)
        .fold(0.0, f64::max);
    let slowest = stages.iter().map(|s| s.seconds).fold(0.0, f64::max);
    // After the passes, as built (no replicas): each stage runs AdamW on the chunks it
    // finishes, then sends each parameter another stage also touches (the tied `wte`)
    // to it; the busiest sender sets the time.
    let total_params = stages.iter().map(|s| s.params).sum();
    let touched: Vec<Vec<bool>> = (0..stages.len())
        .map(|s| division.touched_params(plan, s))
        .collect();
    let mut share_s = vec![0.0; stages.len()];
    for (i, &owner) in division.param_stage.iter().enumerate() {
        let floats = plan.graph.tensor(plan.graph.params[i].tensor).len();
        let readers = (0..stages.len()).filter(|&s| s != owner && touched[s][i]);
        share_s[owner] +=
            readers.count() as f64 * (net.latency_s + 4.0 * floats as f64 / net.bytes_per_s);
    }
    let share_s = share_s.into_iter().fold(0.0, f64::max);
    let adamw_s = stages.iter().map(|s| adamw(s.params)).fold(0.0, f64::max);
    let step_s = (m + p - 1.0) * (slowest + transfer) + adamw_s + share_s;
    let single_s = m * stages.iter().map(|s| s.seconds).sum::<f64>() + adamw(total_params);
    Some(Pipeline {
        share_s,
        bubble: (p - 1.0) / (m + p - 1.0),
        efficiency: single_s / (p * step_s),
        step_s,
        single_s,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_belong_to_their_units() {
        assert_eq!(unit_of("h.3.attn.c_attn.weight"), Unit::Block(3));
        assert_eq!(unit_of("dh.11.residual2"), Unit::Block(11));
        assert_eq!(unit_of("wte"), Unit::Embeddings);
        assert_eq!(unit_of("dwpe"), Unit::Embeddings);
        assert_eq!(unit_of("encoded"), Unit::Embeddings);
        assert_eq!(unit_of("ln_f.weight"), Unit::Head);
        assert_eq!(unit_of("dln_f"), Unit::Head);
        assert_eq!(unit_of("dlogits"), Unit::Head);
        assert_eq!(unit_of("losses"), Unit::Head);
    }

    #[test]
    fn the_cut_minimises_the_slowest_stage() {
        assert_eq!(cut(&[1.0; 4], 2), Some(vec![0..2, 2..4]));
        assert_eq!(cut(&[5.0, 1.0, 1.0, 1.0], 2), Some(vec![0..1, 1..4]));
        assert_eq!(cut(&[1.0, 1.0, 1.0, 5.0], 3), Some(vec![0..1, 1..3, 3..4]));
        let whole: Vec<Range<usize>> = std::iter::once(0..3).collect();
        assert_eq!(cut(&[2.0, 1.0, 1.0], 1), Some(whole));
        assert_eq!(cut(&[1.0; 6], 6).map(|r| r.len()), Some(6));
        assert_eq!(cut(&[1.0; 3], 4), None);
        assert_eq!(cut(&[1.0; 3], 0), None);
        // Every block exactly once, in order, for any count.
        let costs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        for stages in 1..=costs.len() {
            let ranges = cut(&costs, stages).unwrap();
            assert_eq!(ranges.len(), stages);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, costs.len());
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            assert!(ranges.iter().all(|r| !r.is_empty()));
        }
    }
}

//! Keep or recompute: every forward activation that backward reads is either kept
//! from the forward pass or recomputed just before its first backward use, chosen
//! under the memory budget. Candidates are producers whose inputs outlive them
//! anyway: LayerNorm outputs, GELU outputs, and attention (its output and per-row
//! log-sum-exp; the tiled kernels never hold a T×T matrix).
//! The token + position embedding is never a candidate: it is gathered once per step
//! and kept.
//!
//! `Auto` always recomputes the cheap candidates — those that save at least
//! [`CHEAP`] bytes per FLOP spent, i.e. the elementwise ones (GELU ≈ 0.4, LayerNorm ≈
//! 0.5; attention saves ≈ NH/C ≈ 0.02) — since a fused backward kernel can redo them
//! on the fly from inputs it reads anyway; then, only if the plan is still over the
//! budget, the expensive ones, most bytes per FLOP first.

use super::{Kernel, Phase, Plan, PlanError, Recompute, memory};
use crate::graph::{Op, OpKind, TensorId};

/// Bytes saved per recompute FLOP above which recomputing is always worth it.
pub const CHEAP: f64 = 0.25;

/// A forward op whose outputs backward reads, with its bytes saved per FLOP spent.
struct Candidate {
    op: Op,
    saved_per_flop: f64,
}

fn candidates(plan: &Plan) -> Vec<Candidate> {
    let graph = &plan.graph;
    let mut read_backward = vec![false; graph.tensors.len()];
    for kernel in plan.kernels.iter().filter(|k| k.phase != Phase::Forward) {
        for op in &kernel.ops {
            op.inputs.iter().for_each(|i| read_backward[i.0] = true);
        }
    }
    let backward_reads = |id: TensorId| read_backward[id.0];
    let mut found: Vec<Candidate> = plan
        .kernels
        .iter()
        .filter(|k| k.phase == Phase::Forward)
        .flat_map(|k| k.ops.iter())
        .filter(|op| {
            matches!(
                op.kind,
                OpKind::LayerNorm { .. } | OpKind::Gelu | OpKind::Attention { .. }
            )
        })
        .filter(|op| op.outputs.iter().any(|&o| backward_reads(o)))
        .map(|op| {
            let bytes: usize = op.outputs.iter().map(|&o| graph.tensor(o).len()).sum();
            let call = super::ir::lower_op(graph, op, None, &plan.attention_blocks, plan.precision);
            let flops = call.flops().max(1);
            Candidate {
                op: op.clone(),
                saved_per_flop: (super::BYTES_PER_FLOAT * bytes as u64) as f64 / flops as f64,
            }
        })
        .collect();
    // Most bytes saved per FLOP first; ties in graph order (a stable sort).
    found.sort_by(|a, b| b.saved_per_flop.total_cmp(&a.saved_per_flop));
    found
}

/// Re-runs each op of `ops` before its first backward reader, which (and every later
/// one) then reads the fresh copies; the forward outputs die at their last forward
/// use. All in one pass over the kernels (one op at a time rescanned them all, which
/// made planning quadratic in the layers), with the result of doing them one by one
/// in order: fresh tensors created in `ops`' order, and ops that share a first reader
/// inserted before it latest first. (A recompute kernel never reads another
/// candidate's outputs, so inserting one moves no first reader.)
fn recompute_ops(plan: &mut Plan, ops: &[Op]) {
    let mut produced_by: Vec<Option<(usize, usize)>> = vec![None; plan.graph.tensors.len()];
    for (c, op) in ops.iter().enumerate() {
        for (i, out) in op.outputs.iter().enumerate() {
            produced_by[out.0] = Some((c, i));
        }
    }
    let mut first_reader: Vec<Option<usize>> = vec![None; ops.len()];
    for (k, kernel) in plan.kernels.iter().enumerate() {
        if kernel.phase == Phase::Forward {
            continue;
        }
        for input in kernel.ops.iter().flat_map(|o| o.inputs.iter()) {
            if let Some((c, _)) = produced_by[input.0] {
                first_reader[c].get_or_insert(k);
            }
        }
    }
    let fresh: Vec<Vec<TensorId>> = (ops.iter().zip(&first_reader))
        .map(|(op, first)| match first {
            None => Vec::new(),
            Some(_) => (op.outputs.iter())
                .map(|&old| {
                    let t = plan.graph.tensor(old).clone();
                    (plan.graph).add_tensor(format!("{}.recomputed", t.name), t.shape, t.role)
                })
                .collect(),
        })
        .collect();
    let mut inserted: Vec<Vec<usize>> = vec![Vec::new(); plan.kernels.len()];
    for (c, first) in first_reader.iter().enumerate() {
        if let Some(k) = first {
            inserted[*k].push(c);
        }
    }
    let old = std::mem::take(&mut plan.kernels);
    for (k, mut kernel) in old.into_iter().enumerate() {
        for input in kernel.ops.iter_mut().flat_map(|o| o.inputs.iter_mut()) {
            if let Some((c, i)) = produced_by.get(input.0).copied().flatten()
                && first_reader[c].is_some_and(|first| first <= k)
            {
                *input = fresh[c][i];
            }
        }
        for &c in inserted[k].iter().rev() {
            let op = &ops[c];
            plan.kernels.push(Kernel {
                name: format!("recompute_{}", op.kind.name()),
                phase: Phase::Recompute,
                ops: vec![Op {
                    kind: op.kind,
                    inputs: op.inputs.clone(),
                    outputs: fresh[c].clone(),
                }],
                flops: 0,
                bytes: 0,
                zero_first: Vec::new(),
                steps: Vec::new(),
            });
        }
        plan.kernels.push(kernel);
    }
    for (op, first) in ops.iter().zip(&first_reader) {
        if first.is_some() {
            let name = plan.graph.tensor(op.outputs[0]).name.clone();
            plan.recomputed.push(name);
        }
    }
}

/// The plan with the shortest prefix of `expensive` recomputed that fits (all of them
/// when none does). Memory falls as more is recomputed, so the prefix is found by
/// bisection: O(log n) placements of the arena instead of one per candidate (which made
/// refusing an over-budget plan cubic in the layers: 42 s at 300).
fn fewest_expensive(plan: Plan, expensive: &[Candidate], fits: impl Fn(&Plan) -> bool) -> Plan {
    let with = |count: usize| {
        let mut trial = plan.clone();
        let ops: Vec<Op> = expensive[..count].iter().map(|c| c.op.clone()).collect();
        recompute_ops(&mut trial, &ops);
        trial
    };
    let all = with(expensive.len());
    if !fits(&all) {
        return all;
    }
    // fits(with(hi)) holds, fits(plan) (count 0) does not.
    let (mut lo, mut hi, mut best) = (0, expensive.len(), all);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let trial = with(mid);
        if fits(&trial) {
            (hi, best) = (mid, trial);
        } else {
            lo = mid;
        }
    }
    best
}

/// Bytes the plan needs with the arena its kernel order leaves: the cost this pass
/// minimises recomputation under (the fixed state plus one arena per worker).
pub fn needed_bytes(plan: &Plan) -> u64 {
    let arena = memory::layout(plan).arena.peak_bytes;
    plan.fixed_bytes + plan.workers as u64 * arena
}

/// The keep-or-recompute pass: reads the kernels' ops and the budget; inserts the
/// recompute kernels it chooses (the cheap ones always under `Auto`, then the fewest
/// expensive ones that bring [`needed_bytes`] under the budget); refuses a plan that
/// cannot fit.
pub fn recompute(mut plan: Plan, policy: Recompute) -> Result<Plan, PlanError> {
    // Cut into pipeline stages, the whole may use a budget a stage (each stage is
    // checked against one when the run starts).
    let budget = plan.memory_budget.saturating_mul(plan.stages.max(1) as u64);
    let fits = |plan: &Plan| needed_bytes(plan) <= budget;
    let pending = candidates(&plan);
    let ops = |c: &[Candidate]| c.iter().map(|c| c.op.clone()).collect::<Vec<Op>>();
    match policy {
        Recompute::Never => {}
        Recompute::All => recompute_ops(&mut plan, &ops(&pending)),
        Recompute::Auto => {
            let (cheap, expensive): (Vec<Candidate>, Vec<Candidate>) =
                pending.into_iter().partition(|c| c.saved_per_flop >= CHEAP);
            recompute_ops(&mut plan, &ops(&cheap));
            if !fits(&plan) && plan.fixed_bytes <= budget {
                plan = fewest_expensive(plan, &expensive, fits);
            }
        }
    }
    plan.passes.push("recompute");
    let needed = needed_bytes(&plan);
    if needed > budget {
        return Err(PlanError::OverBudget {
            needed,
            fixed: plan.fixed_bytes,
            arena: memory::layout(&plan).arena.peak_bytes,
            workers: plan.workers as u64,
            budget,
            // The planner's budget is the smaller of `plan.memory_budget` and the machine.
            by_machine: crate::peak::machine_memory() == Some(plan.memory_budget),
        });
    }
    Ok(plan)
}

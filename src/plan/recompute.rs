//! Keep or recompute: every forward activation that backward reads is either kept
//! from the forward pass or recomputed just before its first backward use, chosen
//! under the memory budget. Candidates are producers whose inputs outlive them
//! anyway: LayerNorm outputs, GELU outputs, and attention (its T×T probabilities).
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
    let backward_reads = |id: TensorId| {
        plan.kernels
            .iter()
            .filter(|k| k.phase != Phase::Forward)
            .any(|k| k.ops.iter().any(|op| op.inputs.contains(&id)))
    };
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
            let call = super::ir::lower_op(graph, op, &[], &plan.attention_blocks);
            let flops = call.step.flops().max(1);
            Candidate {
                op: op.clone(),
                saved_per_flop: 4.0 * bytes as f64 / flops as f64,
            }
        })
        .collect();
    // Most bytes saved per FLOP first; ties in graph order (a stable sort).
    found.sort_by(|a, b| b.saved_per_flop.total_cmp(&a.saved_per_flop));
    found
}

/// Re-runs `op` before its first backward reader, which (and every later one) then
/// reads the fresh copies; the forward outputs die at their last forward use.
fn recompute_op(plan: &mut Plan, op: &Op) {
    let Some(first_reader) = plan.kernels.iter().position(|k| {
        k.phase != Phase::Forward
            && k.ops
                .iter()
                .any(|o| o.inputs.iter().any(|i| op.outputs.contains(i)))
    }) else {
        return;
    };
    let fresh: Vec<TensorId> = op
        .outputs
        .iter()
        .map(|&old| {
            let t = plan.graph.tensor(old).clone();
            plan.graph
                .add_tensor(format!("{}.recomputed", t.name), t.shape, t.role)
        })
        .collect();
    for kernel in plan.kernels.iter_mut().skip(first_reader) {
        for reader in &mut kernel.ops {
            for input in &mut reader.inputs {
                if let Some(i) = op.outputs.iter().position(|o| o == input) {
                    *input = fresh[i];
                }
            }
        }
    }
    let copy = Op {
        kind: op.kind,
        inputs: op.inputs.clone(),
        outputs: fresh,
    };
    let name = format!("recompute_{}", op.kind.name());
    plan.kernels.insert(
        first_reader,
        Kernel {
            name,
            phase: Phase::Recompute,
            ops: vec![copy],
            flops: 0,
            bytes: 0,
            zero_first: Vec::new(),
            steps: Vec::new(),
        },
    );
    plan.recomputed
        .push(plan.graph.tensor(op.outputs[0]).name.clone());
}

/// The keep-or-recompute pass; refuses a plan that cannot fit the budget.
pub fn recompute(mut plan: Plan, policy: Recompute) -> Result<Plan, PlanError> {
    memory::allocate(&mut plan);
    let fits = |plan: &Plan| plan.total_bytes() <= plan.memory_budget;
    let mut pending = candidates(&plan).into_iter();
    match policy {
        Recompute::Never => {}
        Recompute::All => {
            for candidate in pending.by_ref() {
                recompute_op(&mut plan, &candidate.op);
            }
            memory::allocate(&mut plan);
        }
        Recompute::Auto => {
            let (cheap, expensive): (Vec<Candidate>, Vec<Candidate>) =
                pending.partition(|c| c.saved_per_flop >= CHEAP);
            for candidate in &cheap {
                recompute_op(&mut plan, &candidate.op);
            }
            memory::allocate(&mut plan);
            let mut pending = expensive.into_iter();
            while !fits(&plan) {
                let Some(candidate) = pending.next() else {
                    break;
                };
                recompute_op(&mut plan, &candidate.op);
                memory::allocate(&mut plan);
            }
        }
    }
    plan.passes.push("recompute");
    if !fits(&plan) {
        return Err(PlanError::OverBudget {
            needed: plan.total_bytes(),
            fixed: plan.fixed_bytes,
            arena: plan.arena.peak_bytes,
            workers: plan.workers as u64,
            budget: plan.memory_budget,
        });
    }
    plan.passes.push("allocate");
    Ok(plan)
}

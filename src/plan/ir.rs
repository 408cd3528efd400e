//! The kernel IR: what leaves the plan. Every plan kernel becomes, once, the list of
//! [`Step`]s it runs — kind, exact shapes and its tensors bound to the step's *named*
//! argument slots (declared once, in `cllm_kernels::ir`) — and its FLOPs and bytes are
//! counted from that same value (`cost`). Both back ends consume it: codegen turns it
//! into a kernel description for the JIT, the reference machine runs
//! `cllm_kernels::reference::run_step` on it. The fusion of a matmul with the GELU that
//! follows it (decided by `fusion::fuse_bias_gelu`, which groups them into one kernel)
//! becomes one fused step here, and nowhere else.

use cllm_kernels::attention::AttentionShape;
use cllm_kernels::attention::BlockLists;
use cllm_kernels::bf16::Precision;
pub use cllm_kernels::ir::{Slot, Step};

use super::Plan;
use crate::graph::{Graph, Op, OpKind, TensorId};

/// One step of a plan kernel, each slot bound to a tensor of the graph.
pub type StepCall = Step<TensorId>;

/// The lower pass: reads each kernel's ops; writes its steps and the FLOPs and bytes
/// counted from them.
pub fn lower_kernels(mut plan: Plan) -> Plan {
    for kernel in &mut plan.kernels {
        kernel.steps = lower(
            &plan.graph,
            &kernel.ops,
            &plan.attention_blocks,
            plan.precision,
        );
        super::panels::point_products(&plan.panels, &mut kernel.steps);
        (kernel.flops, kernel.bytes) = super::cost::kernel_cost(&plan.graph, &kernel.steps);
    }
    mark_stored_weight_grads(&mut plan);
    plan.passes.push("lower");
    plan
}

/// Sets `stores_dinp` on each input-gradient product that writes its gradient (and a
/// fused GELU's dpre) first (the allocate pass listed them among its kernel's
/// `zero_first`), and takes them off the list: the product stores instead of adding
/// to zeros (bench-s zeroed ~4 MiB of these a layer and shard, which the products
/// and the GELU epilogue then read back).
pub(super) fn mark_stored_input_grads(plan: &mut Plan) {
    for kernel in &mut plan.kernels {
        for i in 0..kernel.steps.len() {
            let Step::MatmulBackward { dinp, dpre, .. } = kernel.steps[i] else {
                continue;
            };
            // dinp, and a fused GELU's dpre, both written first by this step.
            let written = [Some(dinp), dpre];
            let mut touched_before = false;
            for step in &kernel.steps[..i] {
                step.visit(|_, id| touched_before |= written.contains(&Some(*id)));
            }
            let zeroed = |id: TensorId| kernel.zero_first.contains(&id);
            if touched_before || !written.into_iter().flatten().all(zeroed) {
                continue;
            }
            kernel.zero_first.retain(|id| !written.contains(&Some(*id)));
            if let Step::MatmulBackward { stores_dinp, .. } = &mut kernel.steps[i] {
                *stores_dinp = true;
            }
        }
    }
}

/// Sets `stores_dweight` on each weight-gradient product that is its gradient's only
/// writer in a pass (every linear layer's; not a tied weight's, which a second kernel
/// adds to): in a shard's first pass of a step it stores, and the machine leaves that
/// gradient unzeroed (`Machine::first_pass_zeroes`).
fn mark_stored_weight_grads(plan: &mut Plan) {
    let mut writers = vec![0usize; plan.graph.tensors.len()];
    for step in plan.kernels.iter().flat_map(|k| &k.steps) {
        step.visit(|slot, id| writers[id.0] += usize::from(slot.writes));
    }
    for step in plan.kernels.iter_mut().flat_map(|k| &mut k.steps) {
        if let Step::MatmulBackward {
            dweight,
            stores_dweight,
            ..
        } = step
        {
            *stores_dweight = writers[dweight.0] == 1;
        }
    }
}

/// The steps of a fusion group: each op one step, except a matmul whose output feeds
/// the next op's GELU (one fused step: bias + GELU in the GEMM's epilogue) and a
/// matmul backward whose input gradient is the next GELU backward's output gradient
/// (one fused step: GELU's backward in the epilogue of the input gradient's GEMM).
pub fn lower(
    graph: &Graph,
    ops: &[Op],
    blocks: &BlockLists,
    precision: Precision,
) -> Vec<StepCall> {
    let mut steps = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let op = &ops[i];
        let gelu = match (op.kind, ops.get(i + 1)) {
            (OpKind::Matmul { .. }, Some(next))
                if next.kind == OpKind::Gelu && next.inputs[0] == op.outputs[0] =>
            {
                Some(Gelu::Forward {
                    out: next.outputs[0],
                })
            }
            (OpKind::MatmulBackward { .. }, Some(next))
                if next.kind == OpKind::GeluBackward && next.inputs[0] == op.outputs[0] =>
            {
                Some(Gelu::Backward {
                    dpre: next.outputs[0],
                    pre: next.inputs[1],
                })
            }
            _ => None,
        };
        steps.push(lower_op(graph, op, gelu, blocks, precision));
        i += if gelu.is_none() { 1 } else { 2 };
    }
    steps
}

/// The tensors of a GELU fused into the matmul before it.
#[derive(Clone, Copy, Debug)]
pub enum Gelu {
    /// The forward's GELU output.
    Forward { out: TensorId },
    /// The backward's GELU input gradient and GELU input.
    Backward { dpre: TensorId, pre: TensorId },
}

/// The step of one op (with the GELU fused into it, if any), its tensors bound to the
/// step's slots by name. (An op's own inputs and outputs are positional: the graph's
/// convention, stated on each `OpKind`.) Matrix products run in `precision`.
pub fn lower_op(
    graph: &Graph,
    op: &Op,
    gelu: Option<Gelu>,
    blocks: &BlockLists,
    precision: Precision,
) -> StepCall {
    let d = graph.dims;
    let (batch, t, c, rows) = (d.batch, d.t, d.c, d.rows());
    let (i, o) = (&op.inputs, &op.outputs);
    let len = |id: TensorId| graph.tensor(id).len();
    let attention = |heads| AttentionShape {
        batch,
        t_len: t,
        channels: c,
        heads,
    };
    let gelu_out = match gelu {
        Some(Gelu::Forward { out }) => Some(out),
        _ => None,
    };
    let (dpre, pre) = match gelu {
        Some(Gelu::Backward { dpre, pre }) => (Some(dpre), Some(pre)),
        _ => (None, None),
    };
    match op.kind {
        OpKind::Embedding => Step::Embedding {
            batch,
            t,
            c,
            out: o[0],
            tokens: i[0],
            wte: i[1],
            wpe: i[2],
        },
        OpKind::EmbeddingBackward => Step::EmbeddingBackward {
            batch,
            t,
            c,
            dwte: o[0],
            dwpe: o[1],
            dout: i[0],
            tokens: i[1],
        },
        OpKind::LayerNorm { eps } => Step::LayerNorm {
            rows,
            c,
            eps,
            out: o[0],
            mean: o[1],
            rstd: o[2],
            inp: i[0],
            weight: i[1],
            bias: i[2],
        },
        OpKind::LayerNormBackward => Step::LayerNormBackward {
            rows,
            c,
            dinp: o[0],
            dweight: o[1],
            dbias: o[2],
            dout: i[0],
            inp: i[1],
            weight: i[2],
            mean: i[3],
            rstd: i[4],
        },
        OpKind::Matmul { bias } => {
            let cin = len(i[0]) / rows;
            Step::Matmul {
                rows,
                c: cin,
                oc: len(i[1]) / cin,
                precision,
                out: o[0],
                inp: i[0],
                weight: i[1],
                bias: bias.then(|| i[2]),
                gelu_out,
                // `panels::point_products` points it at the weight's bf16 panels.
                panels: None,
            }
        }
        OpKind::MatmulBackward { bias } => {
            let cin = len(i[1]) / rows;
            Step::MatmulBackward {
                rows,
                c: cin,
                oc: len(i[2]) / cin,
                precision,
                // Set once every kernel is lowered (`mark_stored_weight_grads`).
                stores_dweight: false,
                // Set once the arena is planned (`mark_stored_input_grads`).
                stores_dinp: false,
                dinp: o[0],
                dweight: o[1],
                dbias: bias.then(|| o[2]),
                dout: i[0],
                inp: i[1],
                weight: i[2],
                dpre,
                pre,
                panels: None,
            }
        }
        OpKind::Gelu => Step::Gelu {
            n: len(i[0]),
            out: o[0],
            inp: i[0],
        },
        OpKind::GeluBackward => Step::GeluBackward {
            n: len(i[0]),
            dinp: o[0],
            dout: i[0],
            inp: i[1],
        },
        OpKind::Residual => Step::Residual {
            n: len(i[0]),
            out: o[0],
            a: i[0],
            b: i[1],
        },
        OpKind::ResidualBackward => Step::ResidualBackward {
            n: len(i[0]),
            da: o[0],
            db: o[1],
            dout: i[0],
        },
        OpKind::Attention { heads } => Step::Attention {
            shape: attention(heads),
            blocks: blocks.clone(),
            precision,
            out: o[0],
            lse: o[1],
            qkv: i[0],
            keep: i.get(1).copied(),
        },
        OpKind::AttentionBackward { heads } => Step::AttentionBackward {
            shape: attention(heads),
            blocks: blocks.clone(),
            precision,
            dqkv: o[0],
            dout: i[0],
            qkv: i[1],
            out: i[2],
            lse: i[3],
            keep: i.get(4).copied(),
        },
        OpKind::SoftmaxXent => Step::SoftmaxXent {
            rows,
            v: d.vocab,
            losses: o[0],
            probs: o[1],
            logits: i[0],
            targets: i[1],
        },
        OpKind::SoftmaxXentBackward => Step::SoftmaxXentBackward {
            rows,
            v: d.vocab,
            dlogits: o[0],
            probs: i[0],
            targets: i[1],
        },
    }
}

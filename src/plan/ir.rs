//! The kernel IR: what leaves the plan. Every plan kernel becomes, once, the list of
//! [`Step`]s it runs — kind, exact shapes and its tensors bound to the step's *named*
//! argument slots ([`Step::slots`], the one statement of each step's convention) —
//! and its FLOPs and bytes are counted from that same value (`cost`). Both back ends
//! consume it: codegen turns it into a kernel description for the JIT, the reference
//! machine runs `cllm_kernels::reference::run_step` on it. The fusion of a matmul with
//! the GELU that follows it (decided by `fusion::fuse_bias_gelu`, which groups them
//! into one kernel) becomes one fused step here, and nowhere else.

use serde::Serialize;

use cllm_kernels::attention::AttentionShape;
use cllm_kernels::attention::BlockLists;
pub use cllm_kernels::program::{Slot, Step};

use crate::graph::{Graph, Op, OpKind, TensorId};

/// One tensor bound to one argument slot of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Arg {
    pub slot: &'static str,
    pub writes: bool,
    pub tensor: TensorId,
}

/// One step of a kernel with its bound arguments, in slot order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepCall {
    pub step: Step,
    pub args: Vec<Arg>,
}

/// The steps of a fusion group: each op one step, except a matmul whose output feeds
/// the next op's GELU (one fused step: bias + GELU in the GEMM's epilogue) and a
/// matmul backward whose input gradient is the next GELU backward's output gradient
/// (one fused step: GELU's backward in the epilogue of the input gradient's GEMM).
pub fn lower(graph: &Graph, ops: &[Op], blocks: &BlockLists) -> Vec<StepCall> {
    let mut steps = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let op = &ops[i];
        let gelu = match (op.kind, ops.get(i + 1)) {
            (OpKind::Matmul { .. }, Some(next))
                if next.kind == OpKind::Gelu && next.inputs[0] == op.outputs[0] =>
            {
                vec![next.outputs[0]]
            }
            (OpKind::MatmulBackward { .. }, Some(next))
                if next.kind == OpKind::GeluBackward && next.inputs[0] == op.outputs[0] =>
            {
                vec![next.outputs[0], next.inputs[1]]
            }
            _ => vec![],
        };
        steps.push(lower_op(graph, op, &gelu, blocks));
        i += if gelu.is_empty() { 1 } else { 2 };
    }
    steps
}

/// The step of one op (with the tensors of the GELU fused into it: a forward's GELU
/// output, or a backward's GELU input gradient and input), its tensors bound to the
/// step's slots.
pub fn lower_op(graph: &Graph, op: &Op, gelu: &[TensorId], blocks: &BlockLists) -> StepCall {
    let (step, tensors) = step_of(graph, op, gelu, blocks);
    let slots = step.slots();
    assert_eq!(slots.len(), tensors.len(), "{step:?}: one tensor per slot");
    let args = (slots.into_iter().zip(tensors))
        .map(|(slot, tensor)| Arg {
            slot: slot.name,
            writes: slot.writes,
            tensor,
        })
        .collect();
    StepCall { step, args }
}

/// The step of one op and its tensors in the step's slot order.
fn step_of(
    graph: &Graph,
    op: &Op,
    gelu: &[TensorId],
    blocks: &BlockLists,
) -> (Step, Vec<TensorId>) {
    let d = graph.dims;
    let (t, c, rows) = (d.t, d.c, d.batch * d.t);
    let (i, o) = (&op.inputs, &op.outputs);
    let len = |id: TensorId| graph.tensor(id).len();
    let attention = |heads| AttentionShape {
        batch: d.batch,
        t_len: t,
        channels: c,
        heads,
    };
    match op.kind {
        OpKind::Embedding => (
            Step::Embedding {
                batch: d.batch,
                t,
                c,
            },
            vec![o[0], i[0], i[1], i[2]],
        ),
        OpKind::EmbeddingBackward => (
            Step::EmbeddingBackward {
                batch: d.batch,
                t,
                c,
            },
            vec![o[0], o[1], i[0], i[1]],
        ),
        OpKind::LayerNorm { eps } => (
            Step::LayerNorm { rows, c, eps },
            vec![o[0], o[1], o[2], i[0], i[1], i[2]],
        ),
        OpKind::LayerNormBackward => (
            Step::LayerNormBackward { rows, c },
            vec![o[0], o[1], o[2], i[0], i[1], i[2], i[3], i[4]],
        ),
        OpKind::Matmul { bias } => {
            let cin = len(i[0]) / rows;
            let mut tensors = vec![o[0], i[0], i[1]];
            tensors.extend(bias.then(|| i[2]));
            tensors.extend(gelu);
            (
                Step::Matmul {
                    rows,
                    c: cin,
                    oc: len(i[1]) / cin,
                    bias,
                    gelu: !gelu.is_empty(),
                },
                tensors,
            )
        }
        OpKind::MatmulBackward { bias } => {
            let cin = len(i[1]) / rows;
            let mut tensors = vec![o[0], o[1]];
            tensors.extend(bias.then(|| o[2]));
            tensors.extend([i[0], i[1], i[2]]);
            tensors.extend(gelu);
            (
                Step::MatmulBackward {
                    rows,
                    c: cin,
                    oc: len(i[2]) / cin,
                    bias,
                    gelu: !gelu.is_empty(),
                },
                tensors,
            )
        }
        OpKind::Gelu => (Step::Gelu { n: len(i[0]) }, vec![o[0], i[0]]),
        OpKind::GeluBackward => (Step::GeluBackward { n: len(i[0]) }, vec![o[0], i[0], i[1]]),
        OpKind::Residual => (Step::Residual { n: len(i[0]) }, vec![o[0], i[0], i[1]]),
        OpKind::ResidualBackward => (
            Step::ResidualBackward { n: len(i[0]) },
            vec![o[0], o[1], i[0]],
        ),
        OpKind::Attention { heads } => (
            Step::Attention {
                shape: attention(heads),
                masked: i.len() == 2,
                blocks: blocks.clone(),
            },
            [o[0], o[1]].into_iter().chain(i.iter().copied()).collect(),
        ),
        OpKind::AttentionBackward { heads } => (
            Step::AttentionBackward {
                shape: attention(heads),
                masked: i.len() == 5,
                blocks: blocks.clone(),
            },
            [o[0]].into_iter().chain(i.iter().copied()).collect(),
        ),
        OpKind::SoftmaxXent => (
            Step::SoftmaxXent { rows, v: d.vocab },
            vec![o[0], o[1], i[0], i[1]],
        ),
        OpKind::SoftmaxXentBackward => (
            Step::SoftmaxXentBackward { rows, v: d.vocab },
            vec![o[0], i[0], i[1]],
        ),
    }
}

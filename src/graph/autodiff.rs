//! Reverse-mode autodiff at op level: each forward op, in reverse order, becomes the
//! backward op of its kernel family, reading the gradient of its first output and
//! accumulating into the gradients of its differentiable inputs.

use std::collections::HashMap;

use super::{Graph, Op, OpKind, Role, TensorId};

/// Appends the backward ops of `graph.forward` to `graph.backward`.
pub fn differentiate(graph: &mut Graph) {
    let mut grads: HashMap<TensorId, TensorId> = HashMap::new();
    for op in graph.forward.clone().iter().rev() {
        let dy = grads.get(&op.outputs[0]).copied();
        let backward = backward_op(graph, &mut grads, op, dy);
        graph.backward.extend(backward);
    }
}

/// The gradient tensor of `x`, created on first use.
fn grad_of(graph: &mut Graph, grads: &mut HashMap<TensorId, TensorId>, x: TensorId) -> TensorId {
    if let Some(&g) = grads.get(&x) {
        return g;
    }
    let g = match graph.tensor(x).role {
        Role::Param(i) => graph.params[i].grad,
        Role::Activation => {
            let t = graph.tensor(x);
            let (name, shape) = (format!("d{}", t.name), t.shape.clone());
            graph.add_tensor(name, shape, Role::Grad)
        }
        role @ (Role::Tokens
        | Role::Targets
        | Role::Mask
        | Role::Panels(_)
        | Role::ParamGrad(_)
        | Role::Saved
        | Role::Grad) => unreachable!("no gradient flows into a {role:?} tensor"),
    };
    grads.insert(x, g);
    g
}

/// The backward op of forward `op`, whose first output has gradient `dy` (`None`: no
/// gradient reaches it, and only the loss, which seeds one, has a backward then).
/// Every op kind is named, so a new one is a compile error here.
fn backward_op(
    graph: &mut Graph,
    grads: &mut HashMap<TensorId, TensorId>,
    op: &Op,
    dy: Option<TensorId>,
) -> Option<Op> {
    let (i, o) = (&op.inputs, &op.outputs);
    let mut d = |x: TensorId| grad_of(graph, grads, x);
    let (kind, inputs, outputs) = match (op.kind, dy) {
        // The loss is the seed: its backward needs no incoming gradient.
        (OpKind::SoftmaxXent, _) => (OpKind::SoftmaxXentBackward, vec![o[1], i[1]], vec![d(i[0])]),
        (_, None) => return None,
        (OpKind::Embedding, Some(dy)) => (
            OpKind::EmbeddingBackward,
            vec![dy, i[0]],
            vec![d(i[1]), d(i[2])],
        ),
        (OpKind::LayerNorm { .. }, Some(dy)) => (
            OpKind::LayerNormBackward,
            vec![dy, i[0], i[1], o[1], o[2]],
            vec![d(i[0]), d(i[1]), d(i[2])],
        ),
        (OpKind::Matmul { bias }, Some(dy)) => {
            let mut outputs = vec![d(i[0]), d(i[1])];
            if bias {
                outputs.push(d(i[2]));
            }
            (
                OpKind::MatmulBackward { bias },
                vec![dy, i[0], i[1]],
                outputs,
            )
        }
        (OpKind::Gelu, Some(dy)) => (OpKind::GeluBackward, vec![dy, i[0]], vec![d(i[0])]),
        (OpKind::Residual, Some(dy)) => {
            (OpKind::ResidualBackward, vec![dy], vec![d(i[0]), d(i[1])])
        }
        // Backward recomputes the probabilities tile by tile from the saved
        // log-sum-exp, and reads the output (for rowsum(dy ⊙ y)) and the mask.
        (OpKind::Attention { heads }, Some(dy)) => (
            OpKind::AttentionBackward { heads },
            [dy, i[0], o[0], o[1]]
                .into_iter()
                .chain(i.get(1).copied())
                .collect(),
            vec![d(i[0])],
        ),
        (super::backward_kinds!(), Some(_)) => {
            unreachable!("{} is a backward op in the forward list", op.kind.name())
        }
    };
    Some(Op {
        kind,
        inputs,
        outputs,
    })
}

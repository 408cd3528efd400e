//! Reverse-mode autodiff at op level: each forward op, in reverse order, becomes the
//! backward op of its kernel family, reading the gradient of its first output and
//! accumulating into the gradients of its differentiable inputs.

use std::collections::HashMap;

use super::{Graph, Op, OpKind, Role, TensorId};

/// Appends the backward ops of `graph.forward` to `graph.backward`.
pub fn differentiate(graph: &mut Graph) {
    let mut grads: HashMap<TensorId, TensorId> = HashMap::new();
    for op in graph.forward.clone().iter().rev() {
        let backward = match op.kind {
            // The loss is the seed: its backward needs no incoming gradient.
            OpKind::SoftmaxXent => Some(Op {
                kind: OpKind::SoftmaxXentBackward,
                inputs: vec![op.outputs[1], op.inputs[1]],
                outputs: vec![grad_of(graph, &mut grads, op.inputs[0])],
            }),
            _ => grads
                .get(&op.outputs[0])
                .copied()
                .map(|dy| backward_op(graph, &mut grads, op, dy)),
        };
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
        role => unreachable!("no gradient flows into a {role:?} tensor"),
    };
    grads.insert(x, g);
    g
}

fn backward_op(
    graph: &mut Graph,
    grads: &mut HashMap<TensorId, TensorId>,
    op: &Op,
    dy: TensorId,
) -> Op {
    let (i, o) = (&op.inputs, &op.outputs);
    if let OpKind::Attention { heads } = op.kind {
        // Backward recomputes the probabilities tile by tile from the saved
        // log-sum-exp, and reads the output (for rowsum(dy ⊙ y)) and the mask.
        let dqkv = grad_of(graph, grads, i[0]);
        let inputs = [dy, i[0], o[0], o[1]].into_iter().chain(i.get(1).copied());
        return Op {
            kind: OpKind::AttentionBackward { heads },
            inputs: inputs.collect(),
            outputs: vec![dqkv],
        };
    }
    let mut d = |x: TensorId| grad_of(graph, grads, x);
    let (kind, inputs, outputs) = match op.kind {
        OpKind::Embedding => (
            OpKind::EmbeddingBackward,
            vec![dy, i[0]],
            vec![d(i[1]), d(i[2])],
        ),
        OpKind::LayerNorm { .. } => (
            OpKind::LayerNormBackward,
            vec![dy, i[0], i[1], o[1], o[2]],
            vec![d(i[0]), d(i[1]), d(i[2])],
        ),
        OpKind::Matmul { bias } => {
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
        OpKind::Gelu => (OpKind::GeluBackward, vec![dy, i[0]], vec![d(i[0])]),
        OpKind::Residual => (OpKind::ResidualBackward, vec![dy], vec![d(i[0]), d(i[1])]),
        kind => unreachable!("{kind:?} is not a forward op with a gradient rule"),
    };
    Op {
        kind,
        inputs,
        outputs,
    }
}

//! The reference interpreter: runs a [`Graph`] op by op with the reference kernels of
//! `cllm-kernels` (plain loops, f64 accumulation). It is the correctness baseline that
//! every faster back end is checked against. Storage is generic: `f32` for training,
//! `f64` for the end-to-end gradient check.

use cllm_kernels::Real;
use cllm_kernels::attention::{AttentionShape, attention_backward, attention_forward};
use cllm_kernels::embedding::{embedding_backward, embedding_forward};
use cllm_kernels::gelu::{gelu_backward, gelu_forward};
use cllm_kernels::layernorm::{layernorm_backward, layernorm_forward};
use cllm_kernels::matmul::{matmul_backward, matmul_forward};
use cllm_kernels::residual::{residual_backward, residual_forward};
use cllm_kernels::softmax_xent::{softmax_xent_backward, softmax_xent_forward};

use crate::graph::{Graph, Op, OpKind, Role, TensorId};

/// Every tensor of a graph, each in its own buffer, and the means to run the graph.
pub struct Interpreter<T: Real> {
    graph: Graph,
    buffers: Vec<Vec<T>>,
    tokens: Vec<u32>,
    targets: Vec<u32>,
}

impl<T: Real> Interpreter<T> {
    /// Allocates every tensor of `graph` (parameters start at zero).
    pub fn new(graph: Graph) -> Self {
        let buffers = graph
            .tensors
            .iter()
            .map(|t| match t.role {
                Role::Tokens | Role::Targets => Vec::new(),
                _ => vec![T::default(); t.len()],
            })
            .collect();
        let n = graph.dims.batch * graph.dims.t;
        Interpreter {
            graph,
            buffers,
            tokens: vec![0; n],
            targets: vec![0; n],
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Parameter `i`'s values.
    pub fn param(&self, i: usize) -> &[T] {
        &self.buffers[self.graph.params[i].tensor.0]
    }

    pub fn param_mut(&mut self, i: usize) -> &mut [T] {
        let id = self.graph.params[i].tensor.0;
        &mut self.buffers[id]
    }

    /// Parameter `i`'s value and gradient, the value mutable (for the optimizer).
    pub fn param_and_grad(&mut self, i: usize) -> (&mut [T], &[T]) {
        let (p, g) = (self.graph.params[i].tensor.0, self.graph.params[i].grad.0);
        let (low, high) = self.buffers.split_at_mut(p.max(g));
        if p < g {
            (&mut low[p], &high[0])
        } else {
            (&mut high[0], &low[g])
        }
    }

    /// Parameter `i`'s accumulated gradient.
    pub fn grad(&self, i: usize) -> &[T] {
        &self.buffers[self.graph.params[i].grad.0]
    }

    /// Any tensor's current contents (activations are those of the last pass).
    pub fn tensor(&self, id: TensorId) -> &[T] {
        &self.buffers[id.0]
    }

    /// Sets every parameter gradient to zero (once per optimizer step).
    pub fn zero_param_grads(&mut self) {
        for p in &self.graph.params {
            self.buffers[p.grad.0].fill(T::default());
        }
    }

    /// Runs the forward pass on `tokens` with `targets` (both B·T); returns the sum of
    /// the per-position losses over scored targets.
    pub fn forward(&mut self, tokens: &[u32], targets: &[u32]) -> f64 {
        self.tokens.copy_from_slice(tokens);
        self.targets.copy_from_slice(targets);
        let ops = std::mem::take(&mut self.graph.forward);
        let mut loss_sum = 0.0;
        for op in &ops {
            loss_sum += self.run(op, 0.0);
        }
        self.graph.forward = ops;
        loss_sum
    }

    /// Runs the backward pass of the last forward, accumulating `loss_scale ·
    /// d(Σ losses)` into the parameter gradients.
    pub fn backward(&mut self, loss_scale: f64) {
        for t in 0..self.graph.tensors.len() {
            if self.graph.tensors[t].role == Role::Grad {
                self.buffers[t].fill(T::default());
            }
        }
        let ops = std::mem::take(&mut self.graph.backward);
        for op in &ops {
            self.run(op, loss_scale);
        }
        self.graph.backward = ops;
    }

    /// Runs one op; returns the loss sum for `SoftmaxXent`, else 0.
    fn run(&mut self, op: &Op, loss_scale: f64) -> f64 {
        let mut outs: Vec<Vec<T>> = op
            .outputs
            .iter()
            .map(|id| std::mem::take(&mut self.buffers[id.0]))
            .collect();
        let inp = |k: usize| -> &[T] { &self.buffers[op.inputs[k].0] };
        let d = self.graph.dims;
        let (t, c) = (d.t, d.c);
        let mut loss_sum = 0.0;
        match (op.kind, outs.as_mut_slice()) {
            (OpKind::Embedding, [x]) => embedding_forward(x, &self.tokens, inp(1), inp(2), t, c),
            (OpKind::EmbeddingBackward, [dwte, dwpe]) => {
                embedding_backward(dwte, dwpe, inp(0), &self.tokens, t, c)
            }
            (OpKind::LayerNorm { eps }, [y, mean, rstd]) => {
                layernorm_forward(y, mean, rstd, inp(0), inp(1), inp(2), c, eps)
            }
            (OpKind::LayerNormBackward, [dx, dw, db]) => {
                layernorm_backward(dx, dw, db, inp(0), inp(1), inp(2), inp(3), inp(4), c)
            }
            (OpKind::Matmul { bias }, [y]) => {
                let (x, w) = (inp(0), inp(1));
                let (cin, cout) = (x.len() / (d.batch * t), w.len() / (x.len() / (d.batch * t)));
                matmul_forward(y, x, w, bias.then(|| inp(2)), cin, cout)
            }
            (OpKind::MatmulBackward { bias: false }, [dx, dw]) => {
                let (x, w) = (inp(1), inp(2));
                let cin = x.len() / (d.batch * t);
                matmul_backward(dx, dw, None, inp(0), x, w, cin, w.len() / cin)
            }
            (OpKind::MatmulBackward { bias: true }, [dx, dw, db]) => {
                let (x, w) = (inp(1), inp(2));
                let cin = x.len() / (d.batch * t);
                matmul_backward(dx, dw, Some(db), inp(0), x, w, cin, w.len() / cin)
            }
            (OpKind::Gelu, [y]) => gelu_forward(y, inp(0)),
            (OpKind::GeluBackward, [dx]) => gelu_backward(dx, inp(0), inp(1)),
            (OpKind::Residual, [y]) => residual_forward(y, inp(0), inp(1)),
            (OpKind::ResidualBackward, [da, db]) => residual_backward(da, db, inp(0)),
            (OpKind::Attention { heads }, [y, att]) => {
                let shape = AttentionShape {
                    batch: d.batch,
                    t_len: t,
                    channels: c,
                    heads,
                };
                attention_forward(y, att, inp(0), shape)
            }
            (OpKind::AttentionBackward { heads }, [dqkv]) => {
                let shape = AttentionShape {
                    batch: d.batch,
                    t_len: t,
                    channels: c,
                    heads,
                };
                attention_backward(dqkv, inp(0), inp(1), inp(2), shape)
            }
            (OpKind::SoftmaxXent, [losses, probs]) => {
                loss_sum = softmax_xent_forward(losses, probs, inp(0), &self.targets, d.vocab)
            }
            (OpKind::SoftmaxXentBackward, [dlogits]) => {
                softmax_xent_backward(dlogits, inp(0), &self.targets, loss_scale, d.vocab)
            }
            (kind, outs) => unreachable!("{kind:?} with {} outputs", outs.len()),
        }
        for (id, buffer) in op.outputs.iter().zip(outs) {
            self.buffers[id.0] = buffer;
        }
        loss_sum
    }
}

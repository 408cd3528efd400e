//! Stage 2: a [`Spec`](crate::spec::Spec) → the [`Graph`] of one training step.
//!
//! The graph lists the forward ops of the GPT model with concrete shapes, then the
//! backward ops derived from them by reverse-mode autodiff at op level
//! ([`autodiff`]). Ops are named after the kernels that run them (`kernels/`).
//! Every backward op *accumulates* into its gradient tensors, so a tensor read by two
//! ops (the residual stream, a tied embedding) gets both contributions for free;
//! gradients are zeroed before each step.

mod autodiff;
mod build;
pub mod names;

use serde::Serialize;

pub use build::build;

/// Index of a tensor in [`Graph::tensors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TensorId(pub usize);

/// What a tensor holds, which decides where it lives and when it is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Role {
    /// Token ids of the batch (B,T), u32.
    Tokens,
    /// Next-token targets (B,T), u32; `IGNORE` marks positions that are not scored.
    Targets,
    /// A trainable parameter; the index is into [`Graph::params`].
    Param(usize),
    /// The gradient of parameter `i`; accumulated over micro-batches, zeroed per step.
    ParamGrad(usize),
    /// A forward activation.
    Activation,
    /// A forward by-product kept only for backward (LayerNorm statistics, attention's
    /// per-row log-sum-exp, softmax probabilities).
    Saved,
    /// The gradient of an activation; zeroed before each backward pass.
    Grad,
    /// A sparse attention pattern's (T,T) mask: 1 where a query may attend a key. Fixed
    /// for the run, filled once from the plan's pattern.
    Mask,
    /// Parameter `i` (a weight matrix) rounded to bf16 in the layout the matrix units
    /// read: added by the planner in bf16 mode (`plan/panels.rs`), refreshed from the
    /// parameter before every step that reads it. Two bf16 per float of its length.
    Panels(usize),
}

/// One tensor: its name (llm.c's letters in the shape), shape and role.
#[derive(Clone, Debug, Serialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

impl Tensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Init {
    Normal { std: f64 },
    Zeros,
    Ones,
}

/// A trainable parameter, named as in GPT-2 checkpoints.
#[derive(Clone, Debug, Serialize)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Whether AdamW's weight decay applies (matrices and embeddings, not biases or
    /// LayerNorm parameters).
    pub decay: bool,
    pub tensor: TensorId,
    pub grad: TensorId,
}

/// The kernel an op runs, with the attributes that are not shapes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum OpKind {
    /// in [tokens, wte, wpe] → out [x]
    Embedding,
    /// in [dx, tokens] → out [dwte, dwpe]
    EmbeddingBackward,
    /// in [x, weight, bias] → out [y, mean, rstd]
    LayerNorm { eps: f64 },
    /// in [dy, x, weight, mean, rstd] → out [dx, dweight, dbias]
    LayerNormBackward,
    /// in [x, weight (OC,C), bias?] → out [y]
    Matmul { bias: bool },
    /// in [dy, x, weight] → out [dx, dweight, dbias?]
    MatmulBackward { bias: bool },
    /// in [x] → out [y]
    Gelu,
    /// in [dy, x] → out [dx]
    GeluBackward,
    /// in [a, b] → out [a + b]
    Residual,
    /// in [dy] → out [da, db]
    ResidualBackward,
    /// in [qkv, keep?] → out [y, lse (B,NH,T)]; `keep` (the pattern's mask) unless dense
    Attention { heads: usize },
    /// in [dy, qkv, y, lse, keep?] → out [dqkv]
    AttentionBackward { heads: usize },
    /// in [logits, targets] → out [losses, probs]
    SoftmaxXent,
    /// in [probs, targets] → out [dlogits]
    SoftmaxXentBackward,
}

/// Every backward op kind, as a pattern: the matches over forward ops (autodiff, the
/// decoder) name with it the kinds that cannot occur there, so a new forward kind is
/// still a compile error at each of them.
macro_rules! backward_kinds {
    () => {
        $crate::graph::OpKind::EmbeddingBackward
            | $crate::graph::OpKind::LayerNormBackward
            | $crate::graph::OpKind::MatmulBackward { .. }
            | $crate::graph::OpKind::GeluBackward
            | $crate::graph::OpKind::ResidualBackward
            | $crate::graph::OpKind::AttentionBackward { .. }
            | $crate::graph::OpKind::SoftmaxXentBackward
    };
}
pub(crate) use backward_kinds;

impl OpKind {
    /// The kernel family name of the op alone (fusion names the groups).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Embedding => "embedding",
            OpKind::EmbeddingBackward => "embedding_backward",
            OpKind::LayerNorm { .. } => "layernorm",
            OpKind::LayerNormBackward => "layernorm_backward",
            OpKind::Matmul { bias: true } => "matmul_bias",
            OpKind::Matmul { bias: false } => "matmul",
            OpKind::MatmulBackward { .. } => "matmul_backward",
            OpKind::Gelu => "gelu",
            OpKind::GeluBackward => "gelu_backward",
            OpKind::Residual => "residual",
            OpKind::ResidualBackward => "residual_backward",
            OpKind::Attention { .. } => "attention",
            OpKind::AttentionBackward { .. } => "attention_backward",
            OpKind::SoftmaxXent => "softmax_xent",
            OpKind::SoftmaxXentBackward => "softmax_xent_backward",
        }
    }
}

/// One kernel call: its kind and its tensors, positionally as documented on [`OpKind`].
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub kind: OpKind,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

/// The sizes every shape is made of, named with llm.c's letters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dims {
    /// Sequences in one pass (B).
    pub batch: usize,
    /// Context (T).
    pub t: usize,
    /// Width (C).
    pub c: usize,
    /// Heads (NH).
    pub heads: usize,
    /// Vocabulary (V).
    pub vocab: usize,
    /// Layers (L).
    pub layers: usize,
    /// MLP hidden width (4·C by default).
    pub hidden: usize,
}

impl Dims {
    /// Token positions in one pass: B·T, the rows of every per-position tensor.
    pub fn rows(&self) -> usize {
        self.batch * self.t
    }
}

/// A whole training step: forward ops, then backward ops, over named tensors.
#[derive(Clone, Debug, Serialize)]
pub struct Graph {
    pub dims: Dims,
    pub tensors: Vec<Tensor>,
    pub params: Vec<Param>,
    pub forward: Vec<Op>,
    pub backward: Vec<Op>,
    pub tokens: TensorId,
    pub targets: TensorId,
    pub logits: TensorId,
    pub losses: TensorId,
    /// The attention pattern's mask, when the pattern is not dense.
    pub mask: Option<TensorId>,
}

impl Graph {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0]
    }

    /// Where each parameter starts in the flat parameter (and gradient) buffer: the
    /// parameters in order, packed.
    pub fn param_offsets(&self) -> Vec<usize> {
        let mut total = 0;
        (self.params.iter())
            .map(|p| {
                total += self.tensor(p.tensor).len();
                total - self.tensor(p.tensor).len()
            })
            .collect()
    }

    /// The parameter called `name`, if any.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    pub(crate) fn add_tensor(&mut self, name: String, shape: Vec<usize>, role: Role) -> TensorId {
        self.tensors.push(Tensor { name, shape, role });
        TensorId(self.tensors.len() - 1)
    }
}

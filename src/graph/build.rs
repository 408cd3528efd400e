//! The GPT-2 forward graph from a spec, with concrete shapes.
//!
//! token + position embedding → L × [ LayerNorm → causal attention → residual →
//! LayerNorm → MLP (GELU) → residual ] → LayerNorm → head (tied to `wte` unless
//! `tied_head = false`) → softmax cross-entropy.

use super::names::{self, Part};
use crate::spec::Spec;

use super::{Dims, Graph, Init, Op, OpKind, Param, Role, TensorId, autodiff};

/// Builds the forward and backward graph of one pass over `batch` sequences.
pub fn build(spec: &Spec, batch: usize) -> Graph {
    let m = &spec.model;
    let dims = Dims {
        batch,
        t: m.context as usize,
        c: m.width as usize,
        heads: m.heads as usize,
        vocab: m.vocab_size() as usize,
        layers: m.layers as usize,
        hidden: m.mlp_width() as usize,
    };
    let mut b = Builder::new(dims);
    let std = m.init_std;
    // GPT-2 scales the init of the projections into the residual stream by 1/√(2L).
    let residual_std = std / (2.0 * dims.layers as f64).sqrt();
    let (bt, c, t) = (dims.rows(), dims.c, dims.t);

    let wte = b.param(names::WTE, vec![dims.vocab, c], Init::Normal { std }, true);
    let wpe = b.param(names::WPE, vec![t, c], Init::Normal { std }, true);
    let tokens = b.graph.tokens;
    if m.attention.masked() {
        let mask = b.graph.add_tensor("keep".into(), vec![t, t], Role::Mask);
        b.graph.mask = Some(mask);
    }
    let mask = b.graph.mask;
    let mut x = b.op(
        OpKind::Embedding,
        vec![tokens, wte, wpe],
        &[("encoded", vec![bt, c], Role::Activation)],
    )[0];

    for l in 0..dims.layers {
        let p = names::block(l);
        let ln1 = b.layernorm(&names::part(l, Part::Ln1), x, m.ln_eps);
        let qkv = b.linear(&names::part(l, Part::CAttn), ln1, 3 * c, std);
        let lse_shape = vec![dims.batch, dims.heads, t];
        let outs = b.op(
            OpKind::Attention { heads: dims.heads },
            std::iter::once(qkv).chain(mask).collect(),
            &[
                (&format!("{p}.atty"), vec![bt, c], Role::Activation),
                (&format!("{p}.lse"), lse_shape, Role::Saved),
            ],
        );
        let attproj = b.linear(&names::part(l, Part::CProj), outs[0], c, residual_std);
        let x1 = b.residual(&format!("{p}.residual1"), x, attproj);
        let ln2 = b.layernorm(&names::part(l, Part::Ln2), x1, m.ln_eps);
        let fch = b.linear(&names::part(l, Part::CFc), ln2, dims.hidden, std);
        let gelu = b.op(
            OpKind::Gelu,
            vec![fch],
            &[(
                &format!("{p}.fch_gelu"),
                vec![bt, dims.hidden],
                Role::Activation,
            )],
        )[0];
        let fcproj = b.linear(&names::part(l, Part::MlpProj), gelu, c, residual_std);
        x = b.residual(&format!("{p}.residual2"), x1, fcproj);
    }

    let lnf = b.layernorm(names::LN_F, x, m.ln_eps);
    let head = if m.tied_head {
        wte
    } else {
        b.param(
            names::LM_HEAD,
            vec![dims.vocab, c],
            Init::Normal { std },
            true,
        )
    };
    let logits = b.op(
        OpKind::Matmul { bias: false },
        vec![lnf, head],
        &[("logits", vec![bt, dims.vocab], Role::Activation)],
    )[0];
    let targets = b.graph.targets;
    let outs = b.op(
        OpKind::SoftmaxXent,
        vec![logits, targets],
        &[
            ("losses", vec![bt], Role::Activation),
            ("probs", vec![bt, dims.vocab], Role::Saved),
        ],
    );
    b.graph.logits = logits;
    b.graph.losses = outs[0];

    let mut graph = b.graph;
    autodiff::differentiate(&mut graph);
    graph
}

struct Builder {
    graph: Graph,
}

impl Builder {
    fn new(dims: Dims) -> Builder {
        let mut graph = Graph {
            dims,
            tensors: Vec::new(),
            params: Vec::new(),
            forward: Vec::new(),
            backward: Vec::new(),
            tokens: TensorId(0),
            targets: TensorId(0),
            logits: TensorId(0),
            losses: TensorId(0),
            mask: None,
        };
        let bt = vec![dims.batch, dims.t];
        graph.tokens = graph.add_tensor("tokens".into(), bt.clone(), Role::Tokens);
        graph.targets = graph.add_tensor("targets".into(), bt, Role::Targets);
        Builder { graph }
    }

    fn param(&mut self, name: &str, shape: Vec<usize>, init: Init, decay: bool) -> TensorId {
        let index = self.graph.params.len();
        let tensor = self
            .graph
            .add_tensor(name.to_string(), shape.clone(), Role::Param(index));
        let grad = self
            .graph
            .add_tensor(format!("d{name}"), shape.clone(), Role::ParamGrad(index));
        self.graph.params.push(Param {
            name: name.to_string(),
            shape,
            init,
            decay,
            tensor,
            grad,
        });
        tensor
    }

    /// Appends a forward op and creates its outputs.
    fn op(
        &mut self,
        kind: OpKind,
        inputs: Vec<TensorId>,
        outputs: &[(&str, Vec<usize>, Role)],
    ) -> Vec<TensorId> {
        let outputs: Vec<TensorId> = outputs
            .iter()
            .map(|(name, shape, role)| {
                self.graph
                    .add_tensor(name.to_string(), shape.clone(), *role)
            })
            .collect();
        self.graph.forward.push(Op {
            kind,
            inputs,
            outputs: outputs.clone(),
        });
        outputs
    }

    fn layernorm(&mut self, name: &str, x: TensorId, eps: f64) -> TensorId {
        let (bt, c) = (self.graph.dims.rows(), self.graph.dims.c);
        let w = self.param(&format!("{name}.weight"), vec![c], Init::Ones, false);
        let b = self.param(&format!("{name}.bias"), vec![c], Init::Zeros, false);
        let outs = self.op(
            OpKind::LayerNorm { eps },
            vec![x, w, b],
            &[
                (name, vec![bt, c], Role::Activation),
                (&format!("{name}.mean"), vec![bt], Role::Saved),
                (&format!("{name}.rstd"), vec![bt], Role::Saved),
            ],
        );
        outs[0]
    }

    /// `y = x · Wᵀ + b` with W of shape (out, in).
    fn linear(&mut self, name: &str, x: TensorId, out: usize, std: f64) -> TensorId {
        let bt = self.graph.dims.rows();
        let inp = *self
            .graph
            .tensor(x)
            .shape
            .last()
            .expect("activations have a channel dimension");
        let w = self.param(
            &format!("{name}.weight"),
            vec![out, inp],
            Init::Normal { std },
            true,
        );
        let b = self.param(&format!("{name}.bias"), vec![out], Init::Zeros, false);
        self.op(
            OpKind::Matmul { bias: true },
            vec![x, w, b],
            &[(&format!("{name}.out"), vec![bt, out], Role::Activation)],
        )[0]
    }

    fn residual(&mut self, name: &str, a: TensorId, b: TensorId) -> TensorId {
        let shape = self.graph.tensor(a).shape.clone();
        self.op(
            OpKind::Residual,
            vec![a, b],
            &[(name, shape, Role::Activation)],
        )[0]
    }
}

//! Kernel descriptions → one compiled module. This is the crate's whole interface to
//! the rest of cllm: a [`KernelDesc`] lists the [`Step`]s of one kernel (a fusion
//! group), each with its shapes and the argument slots of its tensors; [`compile`]
//! returns one callable function per description.

use cranelift_codegen::ir::Value;

use crate::adamw::emit_adamw;
use crate::attention::BlockLists;
use crate::attention::{AttentionShape, emit_attention_backward, emit_attention_forward};
use crate::embedding::{emit_embedding_backward, emit_embedding_forward};
use crate::gelu::{emit_gelu_backward, emit_gelu_forward};
use crate::jit::{Compiled, Emitter, JitBuilder, JitError, JitOptions};
use crate::layernorm::{emit_layernorm_backward, emit_layernorm_forward};
use crate::matmul::{emit_matmul_backward, emit_matmul_forward};
use crate::residual::{emit_residual_backward, emit_residual_forward};
use crate::shard_sum::emit_shard_grad_sum;
use crate::softmax_xent::{emit_softmax_xent_backward, emit_softmax_xent_forward};

/// One piece of work with its exact shapes: the kernel IR that leaves the plan. Both
/// back ends consume it — [`compile`] (the JIT) and [`crate::reference::run_step`] (the
/// reference kernels) — with its argument slots in the order given on each variant and
/// named by [`Step::slots`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// [out, tokens, wte, wpe]
    Embedding { batch: usize, t: usize, c: usize },
    /// [dwte, dwpe, dout, tokens]
    EmbeddingBackward { batch: usize, t: usize, c: usize },
    /// [out, mean, rstd, inp, weight, bias]
    LayerNorm { rows: usize, c: usize, eps: f64 },
    /// [dinp, dweight, dbias, dout, inp, weight, mean, rstd]
    LayerNormBackward { rows: usize, c: usize },
    /// [out, inp, weight, bias?, gelu_out?]
    Matmul {
        rows: usize,
        c: usize,
        oc: usize,
        bias: bool,
        gelu: bool,
    },
    /// [dinp, dweight, dbias?, dout, inp, weight, dpre?, pre?]; with `gelu`, dinp is
    /// the gradient of a GELU's output and its input's gradient follows in the dx
    /// product's epilogue: `dpre += dinp ⊙ gelu'(pre)` (the fused GELU backward).
    MatmulBackward {
        rows: usize,
        c: usize,
        oc: usize,
        bias: bool,
        gelu: bool,
    },
    /// [out, inp]
    Gelu { n: usize },
    /// [dinp, dout, inp]
    GeluBackward { n: usize },
    /// [out, a, b]
    Residual { n: usize },
    /// [da, db, dout]
    ResidualBackward { n: usize },
    /// [out, lse, qkv, keep?]: `masked` when a sparse pattern's (T,T) mask follows;
    /// only the listed (query block, key block) tiles are computed
    Attention {
        shape: AttentionShape,
        masked: bool,
        blocks: BlockLists,
    },
    /// [dqkv, dout, qkv, out, lse, keep?]; as for `Attention`
    AttentionBackward {
        shape: AttentionShape,
        masked: bool,
        blocks: BlockLists,
    },
    /// [losses, probs, logits, targets]; the kernel returns Σ loss
    SoftmaxXent { rows: usize, v: usize },
    /// [dlogits, probs, targets]; scalar 0 is the loss scale
    SoftmaxXentBackward { rows: usize, v: usize },
    /// [g0, g1, …, g(shards−1)]: g0 = the fixed-tree sum of all; the kernel returns Σ g0²
    ShardGradSum { shards: usize, len: usize },
    /// [params, grads, m, v]; segments are (offset, length, decayed); scalars as in `emit_adamw`
    AdamW { segments: Vec<(usize, usize, bool)> },
}

/// One argument slot of a step: its name and whether the step writes it (the others
/// it only reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Slot {
    pub name: &'static str,
    pub writes: bool,
}

const fn w(name: &'static str) -> Slot {
    Slot { name, writes: true }
}

const fn r(name: &'static str) -> Slot {
    Slot {
        name,
        writes: false,
    }
}

impl Step {
    /// Floating-point operations of one step, counting a multiply-add as 2.
    pub fn flops(&self) -> u64 {
        let u = |x: usize| x as u64;
        match self {
            Step::Matmul {
                rows, c, oc, gelu, ..
            } => 2 * u(rows * c * oc) + if *gelu { 10 * u(rows * oc) } else { 0 },
            Step::MatmulBackward {
                rows, c, oc, gelu, ..
            } => 4 * u(rows * c * oc) + u(rows * oc) + if *gelu { 16 * u(rows * c) } else { 0 },
            // QKᵀ and P·V over the tiles attention visits (the causal triangle, or a
            // block-sparse pattern's list); backward recomputes QKᵀ, then dO·Vᵀ, dS·K,
            // dSᵀ·Q and Pᵀ·dO: five products.
            Step::Attention { shape, blocks, .. }
            | Step::AttentionBackward { shape, blocks, .. } => {
                let products = if matches!(self, Step::Attention { .. }) {
                    4.0
                } else {
                    10.0
                };
                let t = shape.t_len;
                let square = (shape.batch * t * t * shape.channels) as f64;
                (products * square * blocks.fraction(t)) as u64
            }
            Step::LayerNorm { rows, c, .. } => 8 * u(rows * c),
            Step::LayerNormBackward { rows, c } => 12 * u(rows * c),
            Step::Gelu { n } => 10 * u(*n),
            Step::GeluBackward { n } => 16 * u(*n),
            Step::Residual { n } => u(*n),
            Step::ResidualBackward { n } => 2 * u(*n),
            Step::SoftmaxXent { rows, v } => 5 * u(rows * v),
            Step::SoftmaxXentBackward { rows, v } => 2 * u(rows * v),
            Step::Embedding { batch, t, c } => u(batch * t * c),
            Step::EmbeddingBackward { batch, t, c } => 2 * u(batch * t * c),
            // The optimizer's steps are not plan kernels (the step's FLOP count leaves them
            // out); counted here as the adds of the tree and Σ g², and AdamW's ~12 per
            // parameter (two moments, the bias-corrected update, decay).
            Step::ShardGradSum { shards, len } => u(shards.saturating_sub(1) * len + 2 * len),
            Step::AdamW { segments } => 12 * segments.iter().map(|s| u(s.1)).sum::<u64>(),
        }
    }

    /// The argument slots, in order: the one statement of each step's convention, read
    /// by the plan when it binds tensors, by the JIT and by the reference.
    pub fn slots(&self) -> Vec<Slot> {
        let some = |on: bool, slot: Slot| on.then_some(slot);
        match *self {
            Step::Embedding { .. } => vec![w("out"), r("tokens"), r("wte"), r("wpe")],
            Step::EmbeddingBackward { .. } => vec![w("dwte"), w("dwpe"), r("dout"), r("tokens")],
            Step::LayerNorm { .. } => {
                vec![
                    w("out"),
                    w("mean"),
                    w("rstd"),
                    r("inp"),
                    r("weight"),
                    r("bias"),
                ]
            }
            Step::LayerNormBackward { .. } => vec![
                w("dinp"),
                w("dweight"),
                w("dbias"),
                r("dout"),
                r("inp"),
                r("weight"),
                r("mean"),
                r("rstd"),
            ],
            Step::Matmul { bias, gelu, .. } => [w("out"), r("inp"), r("weight")]
                .into_iter()
                .chain(some(bias, r("bias")))
                .chain(some(gelu, w("gelu_out")))
                .collect(),
            Step::MatmulBackward { bias, gelu, .. } => [w("dinp"), w("dweight")]
                .into_iter()
                .chain(some(bias, w("dbias")))
                .chain([r("dout"), r("inp"), r("weight")])
                .chain(some(gelu, w("dpre")))
                .chain(some(gelu, r("pre")))
                .collect(),
            Step::Gelu { .. } => vec![w("out"), r("inp")],
            Step::GeluBackward { .. } => vec![w("dinp"), r("dout"), r("inp")],
            Step::Residual { .. } => vec![w("out"), r("a"), r("b")],
            Step::ResidualBackward { .. } => vec![w("da"), w("db"), r("dout")],
            Step::Attention { masked, .. } => [w("out"), w("lse"), r("qkv")]
                .into_iter()
                .chain(some(masked, r("keep")))
                .collect(),
            Step::AttentionBackward { masked, .. } => {
                [w("dqkv"), r("dout"), r("qkv"), r("out"), r("lse")]
                    .into_iter()
                    .chain(some(masked, r("keep")))
                    .collect()
            }
            Step::SoftmaxXent { .. } => vec![w("losses"), w("probs"), r("logits"), r("targets")],
            Step::SoftmaxXentBackward { .. } => vec![w("dlogits"), r("probs"), r("targets")],
            Step::ShardGradSum { shards, .. } => vec![w("grads"); shards],
            Step::AdamW { .. } => vec![w("params"), r("grads"), w("m"), w("v")],
        }
    }
}

/// One kernel: a name and its steps, each with its argument slots.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelDesc {
    pub name: String,
    pub steps: Vec<(Step, Vec<usize>)>,
}

/// Compiles every description into one module; functions come back in order.
pub fn compile(kernels: &[KernelDesc], options: JitOptions) -> Result<Compiled, JitError> {
    let mut jit = JitBuilder::new(options, crate::helpers::all())?;
    for kernel in kernels {
        let slots = kernel
            .steps
            .iter()
            .flat_map(|(_, s)| s.iter())
            .max()
            .map_or(0, |m| m + 1);
        jit.kernel(&kernel.name, |e| {
            let args: Vec<Value> = (0..slots).map(|i| e.arg(i)).collect();
            for (step, slots) in &kernel.steps {
                let a: Vec<Value> = slots.iter().map(|&s| args[s]).collect();
                emit_step(e, step, &a);
            }
        })?;
    }
    jit.finish()
}

fn emit_step(e: &mut Emitter<'_>, step: &Step, a: &[Value]) {
    match step.clone() {
        Step::Embedding { batch, t, c } => {
            emit_embedding_forward(e, a[0], a[1], a[2], a[3], batch, t, c)
        }
        Step::EmbeddingBackward { batch, t, c } => {
            emit_embedding_backward(e, a[0], a[1], a[2], a[3], batch, t, c)
        }
        Step::LayerNorm { rows, c, eps } => {
            emit_layernorm_forward(e, a[0], a[1], a[2], a[3], a[4], a[5], rows, c, eps)
        }
        Step::LayerNormBackward { rows, c } => {
            emit_layernorm_backward(e, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], rows, c)
        }
        Step::Matmul {
            rows,
            c,
            oc,
            bias,
            gelu,
        } => {
            let bias_at = bias.then_some(3);
            let gelu_at = gelu.then_some(3 + bias as usize);
            emit_matmul_forward(
                e,
                a[0],
                a[1],
                a[2],
                bias_at.map(|k| a[k]),
                gelu_at.map(|k| a[k]),
                rows,
                c,
                oc,
            )
        }
        Step::MatmulBackward {
            rows,
            c,
            oc,
            bias,
            gelu,
        } => {
            let rest = if bias { 3 } else { 2 };
            emit_matmul_backward(
                e,
                [a[0], a[1]],
                bias.then(|| a[2]),
                [a[rest], a[rest + 1], a[rest + 2]],
                gelu.then(|| (a[rest + 3], a[rest + 4])),
                rows,
                c,
                oc,
            )
        }
        Step::Gelu { n } => emit_gelu_forward(e, a[0], a[1], n),
        Step::GeluBackward { n } => emit_gelu_backward(e, a[0], a[1], a[2], n),
        Step::Residual { n } => emit_residual_forward(e, a[0], a[1], a[2], n),
        Step::ResidualBackward { n } => emit_residual_backward(e, a[0], a[1], a[2], n),
        Step::Attention {
            shape,
            masked,
            blocks,
        } => {
            let keep = masked.then(|| a[3]);
            emit_attention_forward(e, [a[0], a[1], a[2]], keep, shape, &blocks)
        }
        Step::AttentionBackward {
            shape,
            masked,
            blocks,
        } => {
            let keep = masked.then(|| a[5]);
            let io = [a[0], a[1], a[2], a[3], a[4]];
            emit_attention_backward(e, io, keep, shape, &blocks)
        }
        Step::SoftmaxXent { rows, v } => {
            emit_softmax_xent_forward(e, a[0], a[1], a[2], a[3], rows, v)
        }
        Step::SoftmaxXentBackward { rows, v } => {
            emit_softmax_xent_backward(e, a[0], a[1], a[2], rows, v)
        }
        Step::ShardGradSum { shards, len } => emit_shard_grad_sum(e, &a[..shards], len),
        Step::AdamW { segments } => emit_adamw(e, a[0], a[1], a[2], a[3], &segments),
    }
}

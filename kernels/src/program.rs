//! The JIT back end of the kernel IR ([`crate::ir`]): kernel descriptions → one
//! compiled module. A [`KernelDesc`] lists the [`Step`]s of one kernel (a fusion
//! group), each slot an index into the kernel's argument table; [`compile`] returns one
//! callable function per description.

use cranelift_codegen::ir::Value;

use crate::adamw::emit_adamw;
use crate::attention::{emit_attention_backward, emit_attention_forward};
use crate::embedding::{emit_embedding_backward, emit_embedding_forward};
use crate::gelu::{emit_gelu_backward, emit_gelu_forward};
pub use crate::ir::{Slot, Step};
use crate::jit::{Compiled, Emitter, JitBuilder, JitError, JitOptions};
use crate::layernorm::{emit_layernorm_backward, emit_layernorm_forward};
use crate::matmul::{emit_matmul_backward, emit_matmul_forward, emit_weight_panels};
use crate::residual::{emit_residual_backward, emit_residual_forward};
use crate::shard_sum::emit_shard_grad_sum;
use crate::softmax_xent::{emit_softmax_xent_backward, emit_softmax_xent_forward};

/// One kernel: a name and its steps, each slot an index into the kernel's argument
/// table (the pointer array the kernel is called with).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelDesc {
    pub name: String,
    pub steps: Vec<Step>,
}

/// Compiles every description into one module; functions come back in order.
pub fn compile(kernels: &[KernelDesc], options: JitOptions) -> Result<Compiled, JitError> {
    let mut jit = JitBuilder::new(options, crate::helpers::all())?;
    for kernel in kernels {
        let mut slots = 0;
        for step in &kernel.steps {
            step.visit(|_, &i| slots = slots.max(i + 1));
        }
        jit.kernel(&kernel.name, |e| {
            let args: Vec<Value> = (0..slots).map(|i| e.arg(i)).collect();
            for step in &kernel.steps {
                emit_step(e, step.clone().map(|_, i| args[i]));
            }
        })?;
    }
    jit.finish()
}

/// Emits one step, its slots taken by name.
fn emit_step(e: &mut Emitter<'_>, step: Step<Value>) {
    match step {
        Step::Embedding {
            batch,
            t,
            c,
            out,
            tokens,
            wte,
            wpe,
        } => emit_embedding_forward(e, out, tokens, wte, wpe, batch, t, c),
        Step::EmbeddingBackward {
            batch,
            t,
            c,
            dwte,
            dwpe,
            dout,
            tokens,
        } => emit_embedding_backward(e, dwte, dwpe, dout, tokens, batch, t, c),
        Step::LayerNorm {
            rows,
            c,
            eps,
            out,
            mean,
            rstd,
            inp,
            weight,
            bias,
        } => emit_layernorm_forward(e, out, mean, rstd, inp, weight, bias, rows, c, eps),
        Step::LayerNormBackward {
            rows,
            c,
            dinp,
            dweight,
            dbias,
            dout,
            inp,
            weight,
            mean,
            rstd,
        } => emit_layernorm_backward(
            e, dinp, dweight, dbias, dout, inp, weight, mean, rstd, rows, c,
        ),
        Step::Matmul {
            rows,
            c,
            oc,
            precision,
            out,
            inp,
            weight,
            bias,
            gelu_out,
            panels,
        } => {
            let epilogue = (bias, gelu_out, panels);
            emit_matmul_forward(e, precision, out, inp, weight, epilogue, rows, c, oc)
        }
        Step::MatmulBackward {
            rows,
            c,
            oc,
            precision,
            stores_dweight,
            stores_dinp,
            dinp,
            dweight,
            dbias,
            dout,
            inp,
            weight,
            dpre,
            pre,
            panels,
        } => {
            let gelu = match (dpre, pre) {
                (Some(dpre), Some(pre)) => Some((dpre, pre)),
                (None, None) => None,
                _ => panic!("a fused GELU backward needs both dpre and pre"),
            };
            let inputs = [dout, inp, weight];
            emit_matmul_backward(
                e,
                precision,
                [dinp, dweight],
                dbias,
                inputs,
                gelu,
                panels,
                [rows, c, oc],
                [stores_dinp, stores_dweight],
            )
        }
        Step::WeightPanels {
            c,
            oc,
            forward,
            backward,
            weight,
        } => emit_weight_panels(e, [forward, backward], weight, c, oc),
        Step::Gelu { n, out, inp } => emit_gelu_forward(e, out, inp, n),
        Step::GeluBackward { n, dinp, dout, inp } => emit_gelu_backward(e, dinp, dout, inp, n),
        Step::Residual { n, out, a, b } => emit_residual_forward(e, out, a, b, n),
        Step::ResidualBackward { n, da, db, dout } => emit_residual_backward(e, da, db, dout, n),
        Step::Attention {
            shape,
            blocks,
            precision,
            out,
            lse,
            qkv,
            keep,
        } => emit_attention_forward(e, [out, lse, qkv], keep, (shape, precision), &blocks),
        Step::AttentionBackward {
            shape,
            blocks,
            precision,
            dqkv,
            dout,
            qkv,
            out,
            lse,
            keep,
        } => {
            let io = [dqkv, dout, qkv, out, lse];
            emit_attention_backward(e, io, keep, (shape, precision), &blocks)
        }
        Step::SoftmaxXent {
            rows,
            v,
            losses,
            probs,
            logits,
            targets,
        } => emit_softmax_xent_forward(e, losses, probs, logits, targets, rows, v),
        Step::SoftmaxXentBackward {
            rows,
            v,
            dlogits,
            probs,
            targets,
        } => emit_softmax_xent_backward(e, dlogits, probs, targets, rows, v),
        Step::ShardGradSum { len, grads } => emit_shard_grad_sum(e, &grads, len),
        Step::AdamW {
            segments,
            params,
            grads,
            m,
            v,
        } => emit_adamw(e, params, grads, m, v, &segments),
    }
}

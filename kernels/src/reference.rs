//! The reference back end of the kernel IR: one [`Step`] → the reference kernels of
//! its family (the plain loops beside each emitter), on the buffers of its slots, taken
//! by name. The JIT's back end is [`crate::program::compile`]; both read the same step,
//! so "the
//! reference runs the same plan" holds by construction: a fused step (matmul + bias +
//! GELU) is run fused here too, in the order the JIT runs it.

use crate::Real;
use crate::adamw::{AdamWStep, adamw_update};
use crate::attention::{attention_backward, attention_forward};
use crate::embedding::{embedding_backward, embedding_forward};
use crate::gelu::{gelu_backward, gelu_forward};
use crate::ir::Step;
use crate::layernorm::{layernorm_backward, layernorm_forward};
use crate::matmul::{matmul_backward, matmul_forward};
use crate::real::operand;
use crate::residual::{residual_backward, residual_forward};
use crate::shard_sum::shard_grad_sum;
use crate::softmax_xent::{softmax_xent_backward, softmax_xent_forward};

/// The memory behind one slot of a step.
pub enum Buf<'a, T> {
    /// A slot the step only reads.
    In(&'a [T]),
    /// A slot the step writes (or accumulates into).
    Out(&'a mut [T]),
    /// Token ids or targets.
    Ids(&'a [u32]),
}

impl<'a, T> Buf<'a, T> {
    /// The buffer of a slot the step only reads.
    ///
    /// # Panics
    /// If it was bound as written or as ids (a bug in whoever bound the step).
    pub fn read(self) -> &'a [T] {
        match self {
            Buf::In(x) => x,
            _ => panic!("a read slot bound to a written buffer or to ids"),
        }
    }

    /// The buffer of a slot the step writes.
    ///
    /// # Panics
    /// If it was bound read-only or as ids.
    pub fn write(self) -> &'a mut [T] {
        match self {
            Buf::Out(x) => x,
            _ => panic!("a written slot bound to a read-only buffer or to ids"),
        }
    }

    /// The ids of a token or target slot.
    ///
    /// # Panics
    /// If it was bound to floats.
    pub fn ids(self) -> &'a [u32] {
        match self {
            Buf::Ids(x) => x,
            _ => panic!("an id slot bound to a float buffer"),
        }
    }
}

/// The run-time scalars a step may read: the JIT reads the same values from its scalar
/// array.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalars {
    /// The backward of the loss multiplies by it (1/scored targets).
    pub loss_scale: f64,
    /// A shard's first pass of the step ([`crate::jit::FIRST_PASS`]): a
    /// `MatmulBackward` with `stores_dweight` overwrites its weight gradient.
    pub first_pass: bool,
    /// The optimizer's step, for `AdamW`.
    pub adamw: Option<AdamWStep>,
}

/// Runs `step` on the buffers bound to its slots; returns the loss sum for
/// `SoftmaxXent`, Σ g² for `ShardGradSum`, else 0.
///
/// # Panics
/// If a buffer does not match its slot (a bug in whoever bound them), or `AdamW`
/// without its step in `scalars`.
pub fn run_step<T: Real>(step: Step<Buf<'_, T>>, scalars: &Scalars) -> f64 {
    match step {
        Step::Embedding {
            t,
            c,
            out,
            tokens,
            wte,
            wpe,
            ..
        } => embedding_forward(out.write(), tokens.ids(), wte.read(), wpe.read(), t, c),
        Step::EmbeddingBackward {
            t,
            c,
            dwte,
            dwpe,
            dout,
            tokens,
            ..
        } => embedding_backward(dwte.write(), dwpe.write(), dout.read(), tokens.ids(), t, c),
        Step::LayerNorm {
            c,
            eps,
            out,
            mean,
            rstd,
            inp,
            weight,
            bias,
            ..
        } => layernorm_forward(
            out.write(),
            mean.write(),
            rstd.write(),
            inp.read(),
            weight.read(),
            bias.read(),
            c,
            eps,
        ),
        Step::LayerNormBackward {
            c,
            dinp,
            dweight,
            dbias,
            dout,
            inp,
            weight,
            mean,
            rstd,
            ..
        } => layernorm_backward(
            dinp.write(),
            dweight.write(),
            dbias.write(),
            dout.read(),
            inp.read(),
            weight.read(),
            mean.read(),
            rstd.read(),
            c,
        ),
        Step::Matmul {
            c,
            oc,
            precision,
            out,
            inp,
            weight,
            bias,
            gelu_out,
            ..
        } => {
            let out = out.write();
            let (inp, weight) = (
                operand(inp.read(), precision),
                operand(weight.read(), precision),
            );
            matmul_forward(out, &inp, &weight, bias.map(Buf::read), c, oc);
            if let Some(gelu_out) = gelu_out {
                gelu_forward(gelu_out.write(), out);
            }
        }
        Step::MatmulBackward {
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
            ..
        } => {
            let dinp = dinp.write();
            if stores_dinp {
                // Not zeroed by the kernel: the JIT's product stores.
                dinp.fill(T::default());
            }
            let dout = dout.read();
            // The bias gradient sums dout itself (not a matrix product): fp32.
            if let Some(dbias) = dbias {
                crate::matmul::bias_backward(dbias.write(), dout, oc);
            }
            let rounded = operand(dout, precision);
            let dweight = dweight.write();
            if stores_dweight && scalars.first_pass {
                // The JIT's product stores; zero, then the same sums added.
                dweight.fill(T::default());
            }
            matmul_backward(
                &mut *dinp,
                dweight,
                None,
                &rounded,
                &operand(inp.read(), precision),
                &operand(weight.read(), precision),
                c,
                oc,
            );
            match (dpre, pre) {
                (Some(dpre), Some(pre)) => {
                    let dpre = dpre.write();
                    if stores_dinp {
                        // First written here too (`Step::MatmulBackward`).
                        dpre.fill(T::default());
                    }
                    gelu_backward(dpre, dinp, pre.read())
                }
                (None, None) => {}
                _ => panic!("a fused GELU backward needs both dpre and pre"),
            }
        }
        Step::Gelu { out, inp, .. } => gelu_forward(out.write(), inp.read()),
        Step::GeluBackward {
            dinp, dout, inp, ..
        } => gelu_backward(dinp.write(), dout.read(), inp.read()),
        Step::Residual { out, a, b, .. } => residual_forward(out.write(), a.read(), b.read()),
        Step::ResidualBackward { da, db, dout, .. } => {
            residual_backward(da.write(), db.write(), dout.read())
        }
        Step::Attention {
            shape,
            precision,
            out,
            lse,
            qkv,
            keep,
            ..
        } => attention_forward(
            out.write(),
            lse.write(),
            qkv.read(),
            keep.map(Buf::read),
            shape,
            precision,
        ),
        // The saved output and log-sum-exp are the tiled kernel's shortcut; the
        // reference recomputes from the definition.
        Step::AttentionBackward {
            shape,
            precision,
            dqkv,
            dout,
            qkv,
            out: _,
            lse: _,
            keep,
            ..
        } => attention_backward(
            dqkv.write(),
            dout.read(),
            qkv.read(),
            keep.map(Buf::read),
            shape,
            precision,
        ),
        Step::SoftmaxXent {
            v,
            losses,
            probs,
            logits,
            targets,
            ..
        } => {
            let targets = targets.ids();
            return softmax_xent_forward(losses.write(), probs.write(), logits.read(), targets, v);
        }
        Step::SoftmaxXentBackward {
            v,
            dlogits,
            probs,
            targets,
            ..
        } => {
            let (dlogits, probs) = (dlogits.write(), probs.read());
            softmax_xent_backward(dlogits, probs, targets.ids(), scalars.loss_scale, v)
        }
        // The panels are a layout of the native GEMM: the reference's products round
        // the weight themselves, to the same values.
        Step::WeightPanels { .. } => {}
        Step::ShardGradSum { grads, .. } => {
            let mut grads: Vec<&mut [T]> = grads.into_iter().map(Buf::write).collect();
            return shard_grad_sum(&mut grads);
        }
        Step::AdamW {
            segments,
            params,
            grads,
            m,
            v,
        } => {
            let h = scalars.adamw.expect("AdamW runs with its step's scalars");
            let (params, grads, m, v) = (params.write(), grads.read(), m.write(), v.write());
            for (offset, len, decayed) in segments {
                let at = offset..offset + len;
                let step = AdamWStep {
                    weight_decay: if decayed { h.weight_decay } else { 0.0 },
                    ..h
                };
                let (p, m, v) = (
                    &mut params[at.clone()],
                    &mut m[at.clone()],
                    &mut v[at.clone()],
                );
                adamw_update(p, &grads[at], m, v, &step);
            }
        }
    }
    0.0
}

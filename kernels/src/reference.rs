//! The reference back end of the kernel IR: one [`Step`] → the reference kernels of
//! its family (the plain loops beside each emitter), on the buffers of its slots. The
//! JIT's back end is [`crate::program::compile`]; both read the same step, so "the
//! reference runs the same plan" holds by construction: a fused step (matmul + bias +
//! GELU) is run fused here too, in the order the JIT runs it.

use crate::Real;
use crate::attention::{attention_backward, attention_forward};
use crate::embedding::{embedding_backward, embedding_forward};
use crate::gelu::{gelu_backward, gelu_forward};
use crate::layernorm::{layernorm_backward, layernorm_forward};
use crate::matmul::{matmul_backward, matmul_forward};
use crate::program::Step;
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

/// The step's buffers in slot order, taken one at a time.
struct Slots<'a, T>(std::vec::IntoIter<Buf<'a, T>>);

impl<'a, T> Slots<'a, T> {
    fn next(&mut self) -> Buf<'a, T> {
        self.0.next().expect("a buffer for every slot of the step")
    }
    fn read(&mut self) -> &'a [T] {
        match self.next() {
            Buf::In(x) => x,
            _ => panic!("a read slot bound to a written buffer or to ids"),
        }
    }
    fn write(&mut self) -> &'a mut [T] {
        match self.next() {
            Buf::Out(x) => x,
            _ => panic!("a written slot bound to a read-only buffer or to ids"),
        }
    }
    fn ids(&mut self) -> &'a [u32] {
        match self.next() {
            Buf::Ids(x) => x,
            _ => panic!("an id slot bound to a float buffer"),
        }
    }
}

/// Runs `step` on `bufs` (one per slot, in [`Step::slots`] order); returns the loss
/// sum for `SoftmaxXent`, Σ g² for `ShardGradSum`, else 0. `loss_scale` is the scalar
/// the backward of the loss reads.
///
/// # Panics
/// If a buffer does not match its slot (a bug in whoever bound them), or for `AdamW`,
/// whose step scalars live with the optimizer (`adamw::adamw_update`).
pub fn run_step<T: Real>(step: &Step, bufs: Vec<Buf<'_, T>>, loss_scale: f64) -> f64 {
    assert_eq!(bufs.len(), step.slots().len(), "one buffer per slot");
    let mut s = Slots(bufs.into_iter());
    match *step {
        Step::Embedding { t, c, .. } => {
            let (out, tokens, wte, wpe) = (s.write(), s.ids(), s.read(), s.read());
            embedding_forward(out, tokens, wte, wpe, t, c)
        }
        Step::EmbeddingBackward { t, c, .. } => {
            let (dwte, dwpe, dout, tokens) = (s.write(), s.write(), s.read(), s.ids());
            embedding_backward(dwte, dwpe, dout, tokens, t, c)
        }
        Step::LayerNorm { c, eps, .. } => {
            let (out, mean, rstd) = (s.write(), s.write(), s.write());
            let (inp, weight, bias) = (s.read(), s.read(), s.read());
            layernorm_forward(out, mean, rstd, inp, weight, bias, c, eps)
        }
        Step::LayerNormBackward { c, .. } => {
            let (dinp, dweight, dbias) = (s.write(), s.write(), s.write());
            let (dout, inp, weight, mean, rstd) =
                (s.read(), s.read(), s.read(), s.read(), s.read());
            layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, c)
        }
        Step::Matmul {
            c, oc, bias, gelu, ..
        } => {
            let (out, inp, weight) = (s.write(), s.read(), s.read());
            let bias = bias.then(|| s.read());
            matmul_forward(out, inp, weight, bias, c, oc);
            if gelu {
                gelu_forward(s.write(), out);
            }
        }
        Step::MatmulBackward {
            c, oc, bias, gelu, ..
        } => {
            let (dinp, dweight) = (s.write(), s.write());
            let dbias = bias.then(|| s.write());
            let (dout, inp, weight) = (s.read(), s.read(), s.read());
            matmul_backward(&mut *dinp, dweight, dbias, dout, inp, weight, c, oc);
            if gelu {
                gelu_backward(s.write(), dinp, s.read());
            }
        }
        Step::Gelu { .. } => gelu_forward(s.write(), s.read()),
        Step::GeluBackward { .. } => gelu_backward(s.write(), s.read(), s.read()),
        Step::Residual { .. } => residual_forward(s.write(), s.read(), s.read()),
        Step::ResidualBackward { .. } => residual_backward(s.write(), s.write(), s.read()),
        Step::Attention { shape, masked, .. } => {
            let (out, lse, qkv) = (s.write(), s.write(), s.read());
            let keep = masked.then(|| s.read());
            attention_forward(out, lse, qkv, keep, shape)
        }
        Step::AttentionBackward { shape, masked, .. } => {
            let (dqkv, dout, qkv) = (s.write(), s.read(), s.read());
            // The saved output and log-sum-exp are the tiled kernel's shortcut; the
            // reference recomputes from the definition.
            let (_out, _lse) = (s.read(), s.read());
            let keep = masked.then(|| s.read());
            attention_backward(dqkv, dout, qkv, keep, shape)
        }
        Step::SoftmaxXent { v, .. } => {
            let (losses, probs, logits, targets) = (s.write(), s.write(), s.read(), s.ids());
            return softmax_xent_forward(losses, probs, logits, targets, v);
        }
        Step::SoftmaxXentBackward { v, .. } => {
            let (dlogits, probs, targets) = (s.write(), s.read(), s.ids());
            softmax_xent_backward(dlogits, probs, targets, loss_scale, v)
        }
        Step::ShardGradSum { shards, .. } => {
            let mut grads: Vec<&mut [T]> = (0..shards).map(|_| s.write()).collect();
            return shard_grad_sum(&mut grads);
        }
        Step::AdamW { .. } => {
            panic!("AdamW runs through adamw::adamw_update with its step scalars")
        }
    }
    0.0
}

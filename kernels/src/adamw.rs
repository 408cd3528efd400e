//! AdamW with bias correction and decoupled weight decay (the global gradient norm
//! comes from the shard-gradient sum, `shard_sum.rs`).
//!
//! For step t ≥ 1, gradient g (already multiplied by the clipping factor):
//!   `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`,
//!   `θ ← θ − lr·(m̂/(√v̂ + ε) + λ·θ)`
//! λ is 0 for parameters that are not decayed (biases, LayerNorm gains and biases).
//!
//! Shapes: params, grads, m, v: one flat (P) segment per call.

use crate::real::Real;

/// Hyperparameters of one AdamW update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step number, for bias correction.
    pub t: u64,
    /// Multiplies every gradient first (the clipping factor; 1 when not clipping).
    pub grad_scale: f64,
}

/// The run-time scalars of the JIT's AdamW kernel: the kernel's scalar pointer points
/// at one of these (`repr(C)`: eight f64s, read by field).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1/(1−β₁ᵗ)
    pub inv_correction1: f64,
    /// 1/(1−β₂ᵗ)
    pub inv_correction2: f64,
    pub grad_scale: f64,
}

impl AdamWScalars {
    /// The scalars as the kernel's scalar array.
    pub fn as_array(&self) -> &[f64; 8] {
        const { assert!(std::mem::size_of::<AdamWScalars>() == 8 * 8) };
        // SAFETY: `repr(C)`, eight f64 fields: the layout of `[f64; 8]` (size checked).
        unsafe { &*(self as *const AdamWScalars).cast::<[f64; 8]>() }
    }
}

impl AdamWStep {
    /// The scalars the JIT's kernel reads for this step (bias corrections folded).
    pub fn scalars(&self) -> AdamWScalars {
        AdamWScalars {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            inv_correction1: 1.0 / (1.0 - self.beta1.powf(self.t as f64)),
            inv_correction2: 1.0 / (1.0 - self.beta2.powf(self.t as f64)),
            grad_scale: self.grad_scale,
        }
    }
}

/// Updates one parameter segment in place.
pub fn adamw_update<T: Real>(
    params: &mut [T],
    grads: &[T],
    m: &mut [T],
    v: &mut [T],
    s: &AdamWStep,
) {
    let correction1 = 1.0 - s.beta1.powf(s.t as f64);
    let correction2 = 1.0 - s.beta2.powf(s.t as f64);
    for i in 0..params.len() {
        let g = grads[i].to_f64() * s.grad_scale;
        let m_i = s.beta1 * m[i].to_f64() + (1.0 - s.beta1) * g;
        let v_i = s.beta2 * v[i].to_f64() + (1.0 - s.beta2) * g * g;
        let m_hat = m_i / correction1;
        let v_hat = v_i / correction2;
        let p = params[i].to_f64();
        params[i] = T::from_f64(p - s.lr * (m_hat / (v_hat.sqrt() + s.eps) + s.weight_decay * p));
        m[i] = T::from_f64(m_i);
        v[i] = T::from_f64(v_i);
    }
}

// ── Cranelift emitters ────────────────────────────────────────────────────────

use crate::jit::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value, types};

/// One AdamW pass over every parameter: `segments` are (offset, length, decayed) in
/// the flat parameter, gradient and moment buffers (args 0..4). Run-time scalars: an
/// [`AdamWScalars`].
pub fn emit_adamw(
    e: &mut Emitter<'_>,
    params: Value,
    grads: Value,
    m: Value,
    v: Value,
    segments: &[(usize, usize, bool)],
) {
    let mut scalar = |offset: usize| {
        let s = e.scalar(offset / std::mem::size_of::<f64>());
        e.b.ins().fdemote(types::F32, s)
    };
    use std::mem::offset_of;
    let lr = scalar(offset_of!(AdamWScalars, lr));
    let beta1 = scalar(offset_of!(AdamWScalars, beta1));
    let beta2 = scalar(offset_of!(AdamWScalars, beta2));
    let eps = scalar(offset_of!(AdamWScalars, eps));
    let wd = scalar(offset_of!(AdamWScalars, weight_decay));
    let inv_c1 = scalar(offset_of!(AdamWScalars, inv_correction1));
    let inv_c2 = scalar(offset_of!(AdamWScalars, inv_correction2));
    let grad_scale = scalar(offset_of!(AdamWScalars, grad_scale));
    let one = e.b.ins().f32const(1.0);
    let one_minus_b1 = e.b.ins().fsub(one, beta1);
    let one_minus_b2 = e.b.ins().fsub(one, beta2);
    let zero = e.b.ins().f32const(0.0);
    let neg_lr = e.b.ins().fneg(lr);
    for &(offset, len, decayed) in segments {
        let at = e.int(offset as i64);
        let (p, g, mm, vv) = (
            e.element(params, at),
            e.element(grads, at),
            e.element(m, at),
            e.element(v, at),
        );
        let decay = if decayed { wd } else { zero };
        e.lanes(len, |e, lanes, i| {
            let w = |e: &mut Emitter<'_>, x| e.widen(lanes, x);
            let gv = e.load(lanes, g, i, 0);
            let gs = w(e, grad_scale);
            let gv = e.b.ins().fmul(gv, gs);
            let (b1, ob1, b2, ob2) = (
                w(e, beta1),
                w(e, one_minus_b1),
                w(e, beta2),
                w(e, one_minus_b2),
            );
            let mv = e.load(lanes, mm, i, 0);
            let mv = e.b.ins().fmul(mv, b1);
            let mv = e.b.ins().fma(ob1, gv, mv);
            e.store(mv, mm, i, 0);
            let g2 = e.b.ins().fmul(gv, gv);
            let vv2 = e.load(lanes, vv, i, 0);
            let vv2 = e.b.ins().fmul(vv2, b2);
            let vv2 = e.b.ins().fma(ob2, g2, vv2);
            e.store(vv2, vv, i, 0);
            let (c1, c2, epsw, dw, nlr) = (
                w(e, inv_c1),
                w(e, inv_c2),
                w(e, eps),
                w(e, decay),
                w(e, neg_lr),
            );
            let m_hat = e.b.ins().fmul(mv, c1);
            let v_hat = e.b.ins().fmul(vv2, c2);
            let root = e.b.ins().sqrt(v_hat);
            let denominator = e.b.ins().fadd(root, epsw);
            let step = e.b.ins().fdiv(m_hat, denominator);
            let pv = e.load(lanes, p, i, 0);
            let step = e.b.ins().fma(dw, pv, step);
            let r = e.b.ins().fma(nlr, step, pv);
            e.store(r, p, i, 0);
        });
    }
}

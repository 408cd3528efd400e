//! AdamW with bias correction and decoupled weight decay, and the global gradient norm.
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

/// Σ g², in f64, in a fixed order.
pub fn grad_norm_squared<T: Real>(grads: &[T]) -> f64 {
    grads.iter().map(|g| g.to_f64() * g.to_f64()).sum()
}

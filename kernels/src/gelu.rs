//! GELU, tanh form (GPT-2's).
//!
//! Forward:  `y = ½·x·(1 + tanh(k·(x + 0.044715·x³)))`, `k = √(2/π)`
//! Backward: `dx += dy · (½(1 + tanh u) + ½·x·(1 − tanh² u)·k·(1 + 3·0.044715·x²))`
//!
//! Shapes: elementwise over any (N).

use crate::real::Real;

const K: f64 = 0.797_884_560_802_865_4; // √(2/π)
const A: f64 = 0.044_715;

/// The GELU of one value, in f64.
#[inline]
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + (K * (x + A * x * x * x)).tanh())
}

/// dGELU/dx at one value, in f64.
#[inline]
pub fn gelu_grad(x: f64) -> f64 {
    let u = K * (x + A * x * x * x);
    let t = u.tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * A * x * x)
}

pub fn gelu_forward<T: Real>(out: &mut [T], inp: &[T]) {
    for (y, x) in out.iter_mut().zip(inp) {
        *y = T::from_f64(gelu(x.to_f64()));
    }
}

/// Accumulates `dinp += dout · gelu'(inp)`.
pub fn gelu_backward<T: Real>(dinp: &mut [T], dout: &[T], inp: &[T]) {
    for ((dx, dy), x) in dinp.iter_mut().zip(dout).zip(inp) {
        *dx = T::from_f64(dx.to_f64() + dy.to_f64() * gelu_grad(x.to_f64()));
    }
}

//! Residual add.
//!
//! Forward:  `out = a + b`
//! Backward: `da += dout`, `db += dout`
//!
//! Shapes: elementwise over any (N).

use crate::real::Real;

pub fn residual_forward<T: Real>(out: &mut [T], a: &[T], b: &[T]) {
    for ((y, x1), x2) in out.iter_mut().zip(a).zip(b) {
        *y = T::from_f64(x1.to_f64() + x2.to_f64());
    }
}

/// Accumulates `dout` into both inputs' gradients.
pub fn residual_backward<T: Real>(da: &mut [T], db: &mut [T], dout: &[T]) {
    for ((x1, x2), d) in da.iter_mut().zip(db.iter_mut()).zip(dout) {
        *x1 = T::from_f64(x1.to_f64() + d.to_f64());
        *x2 = T::from_f64(x2.to_f64() + d.to_f64());
    }
}

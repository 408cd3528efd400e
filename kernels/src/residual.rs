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

// ── Cranelift emitters ────────────────────────────────────────────────────────

use crate::jit::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value};

/// `out = a + b` over `n` floats.
pub fn emit_residual_forward(e: &mut Emitter<'_>, out: Value, a: Value, b: Value, n: usize) {
    e.lanes(n, |e, lanes, i| {
        let x = e.load(lanes, a, i, 0);
        let y = e.load(lanes, b, i, 0);
        let s = e.b.ins().fadd(x, y);
        e.store(s, out, i, 0);
    });
}

/// `da += dout`, `db += dout` over `n` floats.
pub fn emit_residual_backward(e: &mut Emitter<'_>, da: Value, db: Value, dout: Value, n: usize) {
    e.lanes(n, |e, lanes, i| {
        let d = e.load(lanes, dout, i, 0);
        for target in [da, db] {
            let x = e.load(lanes, target, i, 0);
            let s = e.b.ins().fadd(x, d);
            e.store(s, target, i, 0);
        }
    });
}

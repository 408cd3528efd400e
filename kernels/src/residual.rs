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

use crate::rows::Shared;

/// `out = a + b` over `n` floats, native, at the CPU's full width, split over the
/// caller's spare threads (`rows.rs`).
///
/// # Safety
/// Each pointer holds `n` floats; `out` may be `a` or `b` (each element is read before
/// it is written).
pub unsafe extern "C" fn cllm_residual(out: *mut f32, a: *const f32, b: *const f32, n: i64) {
    let (out, a, b) = (Shared(out), Shared::of(a), Shared::of(b));
    crate::rows::for_each_part(n as usize, 1, |r| {
        // Raw pointers, not slices: `out` may alias an input.
        let len = r.len();
        let (out, a, b) = (out.at(r.start), a.at(r.start), b.at(r.start));
        crate::cpu::full_width!((out: *mut f32, a: *mut f32, b: *mut f32, len: usize) => {
            for i in 0..len {
                // SAFETY: in range of this part's elements (the caller's contract).
                unsafe { *out.add(i) = *a.add(i) + *b.add(i) };
            }
        })
    });
}

/// `da += dout`, `db += dout` over `n` floats, native, as [`cllm_residual`].
///
/// # Safety
/// Each pointer holds `n` floats; `da` and `db` overlap neither each other nor `dout`.
pub unsafe extern "C" fn cllm_residual_backward(
    da: *mut f32,
    db: *mut f32,
    dout: *const f32,
    n: i64,
) {
    let (da, db, dout) = (Shared(da), Shared(db), Shared::of(dout));
    crate::rows::for_each_part(n as usize, 1, |r| {
        // SAFETY: the caller's contract; this part writes its own elements only.
        let (da, db, dout) = unsafe {
            (
                da.slice_mut(r.clone()),
                db.slice_mut(r.clone()),
                dout.slice(r),
            )
        };
        crate::cpu::full_width!((da: &mut [f32], db: &mut [f32], dout: &[f32]) => {
            for ((a, b), d) in da.iter_mut().zip(db.iter_mut()).zip(dout) {
                *a += d;
                *b += d;
            }
        })
    });
}

/// `out = a + b` over `n` floats.
pub fn emit_residual_forward(e: &mut Emitter<'_>, out: Value, a: Value, b: Value, n: usize) {
    if e.native() {
        let n = e.int(n as i64);
        e.call("cllm_residual", &[out, a, b, n]);
        return;
    }
    e.lanes(n, |e, lanes, i| {
        let x = e.load(lanes, a, i, 0);
        let y = e.load(lanes, b, i, 0);
        let s = e.b.ins().fadd(x, y);
        e.store(s, out, i, 0);
    });
}

/// `da += dout`, `db += dout` over `n` floats.
pub fn emit_residual_backward(e: &mut Emitter<'_>, da: Value, db: Value, dout: Value, n: usize) {
    if e.native() {
        let n = e.int(n as i64);
        e.call("cllm_residual_backward", &[da, db, dout, n]);
        return;
    }
    e.lanes(n, |e, lanes, i| {
        let d = e.load(lanes, dout, i, 0);
        for target in [da, db] {
            let x = e.load(lanes, target, i, 0);
            let s = e.b.ins().fadd(x, d);
            e.store(s, target, i, 0);
        }
    });
}

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

// ── Cranelift emitters ────────────────────────────────────────────────────────
// The JIT uses the identity ½(1 + tanh u) = σ(2u): `y = x·σ(2u)`, and
// `y' = σ + x·σ(1 − σ)·2k(1 + 3A·x²)`; exp is the inline polynomial of jit::math.

use crate::jit::{Emitter, Lanes};
use cranelift_codegen::ir::{InstBuilder, Value};

/// GELU in f32 exactly as [`emit_gelu_value`] computes it, `x · σ(2u)` operation for
/// operation (the native GEMM's fused epilogue; without FMA hardware `mul_add` is a
/// slow library call, so only code compiled with FMA should use it in a loop).
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    let (a, two_k) = (A as f32, (2.0 * K) as f32);
    let inner = a.mul_add(x * x, 1.0);
    let u2 = (x * inner) * two_k;
    // σ(2u) as `Emitter::sigmoid` computes it: −2u clamped as there, then exp.
    use crate::jit::math::{EXP_CLAMP, SIGMOID_EXP_MAX, exp_f32};
    let z = -u2;
    let z = if z < EXP_CLAMP.0 { EXP_CLAMP.0 } else { z };
    let z = if z > SIGMOID_EXP_MAX {
        SIGMOID_EXP_MAX
    } else {
        z
    };
    x * (1.0 / (1.0 + exp_f32(z)))
}

/// (x, σ(2u)) for one lane group.
fn gate(e: &mut Emitter<'_>, lanes: Lanes, x: Value) -> Value {
    let two_k = e.constant(lanes, (2.0 * K) as f32);
    let a = e.constant(lanes, A as f32);
    let one = e.constant(lanes, 1.0);
    let x2 = e.b.ins().fmul(x, x);
    let inner = e.b.ins().fma(a, x2, one); // 1 + A·x²
    let u2 = e.b.ins().fmul(x, inner);
    let u2 = e.b.ins().fmul(u2, two_k); // 2u
    e.sigmoid(lanes, u2)
}

/// GELU of one lane group.
pub fn emit_gelu_value(e: &mut Emitter<'_>, lanes: Lanes, x: Value) -> Value {
    let s = gate(e, lanes, x);
    e.b.ins().fmul(x, s)
}

// ── Native GELU ───────────────────────────────────────────────────────────────
// The JIT's GELU forward and backward, operation for operation (the same bits), as
// Rust at the CPU's full width (`cpu::full_width!`): on Cranelift's four lanes these
// passes were the slowest kernels per element of a step. JIT code calls them when
// native kernels are on (`plan.gemm = native`).

/// The gradient factor of [`gelu_f32`], as [`emit_gelu_backward`] computes it.
#[inline(always)]
pub(crate) fn gelu_grad_f32(x: f32) -> f32 {
    use crate::jit::math::{EXP_CLAMP, SIGMOID_EXP_MAX, exp_f32};
    let (a, two_k) = (A as f32, (2.0 * K) as f32);
    let inner = a.mul_add(x * x, 1.0);
    let z = -((x * inner) * two_k);
    let z = if z < EXP_CLAMP.0 { EXP_CLAMP.0 } else { z };
    let z = if z > SIGMOID_EXP_MAX {
        SIGMOID_EXP_MAX
    } else {
        z
    };
    let s = 1.0 / (1.0 + exp_f32(z));
    let du = ((3.0 * A) as f32).mul_add(x * x, 1.0) * two_k;
    let slope = (s * (1.0 - s)) * du;
    x.mul_add(slope, s)
}

/// Elements per chunk of the native loops: whole vectors at either width.
use crate::rows::Shared;

const CHUNK: usize = 16;

/// `out = gelu(inp)` over `n` floats.
///
/// # Safety
/// `out` and `inp` hold `n` floats.
pub unsafe extern "C" fn cllm_gelu(out: *mut f32, inp: *const f32, n: i64) {
    let (out, inp) = (Shared(out), Shared::of(inp));
    crate::rows::for_each_part(n as usize, 1, |r| {
        // SAFETY: the caller's contract; this part writes its own elements only.
        unsafe { gelu_part(out.slice_mut(r.clone()), inp.slice(r)) }
    });
}

/// [`cllm_gelu`] on a range of elements.
fn gelu_part(out: &mut [f32], inp: &[f32]) {
    crate::cpu::full_width!((out: &mut [f32], inp: &[f32]) => {
        let mut o = out.chunks_exact_mut(CHUNK);
        let mut i = inp.chunks_exact(CHUNK);
        for (y, x) in (&mut o).zip(&mut i) {
            for j in 0..CHUNK {
                y[j] = gelu_f32(x[j]);
            }
        }
        for (y, x) in o.into_remainder().iter_mut().zip(i.remainder()) {
            *y = gelu_f32(*x);
        }
    })
}

/// `dinp += dout · gelu'(inp)` over `n` floats.
///
/// # Safety
/// The three buffers hold `n` floats; `dinp` overlaps neither input.
pub unsafe extern "C" fn cllm_gelu_backward(
    dinp: *mut f32,
    dout: *const f32,
    inp: *const f32,
    n: i64,
) {
    let (dinp, dout, inp) = (Shared(dinp), Shared::of(dout), Shared::of(inp));
    crate::rows::for_each_part(n as usize, 1, |r| {
        // SAFETY: the caller's contract; this part writes its own elements only.
        unsafe {
            gelu_backward_part(
                dinp.slice_mut(r.clone()),
                dout.slice(r.clone()),
                inp.slice(r),
            )
        }
    });
}

/// [`cllm_gelu_backward`] on a range of elements.
fn gelu_backward_part(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    crate::cpu::full_width!((dx: &mut [f32], dy: &[f32], x: &[f32]) => {
        let mut d = dx.chunks_exact_mut(CHUNK);
        let (mut g, mut v) = (dy.chunks_exact(CHUNK), x.chunks_exact(CHUNK));
        for ((d, g), v) in (&mut d).zip(&mut g).zip(&mut v) {
            for j in 0..CHUNK {
                d[j] = g[j].mul_add(gelu_grad_f32(v[j]), d[j]);
            }
        }
        let rest = (d.into_remainder().iter_mut())
            .zip(g.remainder())
            .zip(v.remainder());
        for ((d, g), v) in rest {
            *d = g.mul_add(gelu_grad_f32(*v), *d);
        }
    })
}

/// `out = gelu(inp)` over `n` floats.
pub fn emit_gelu_forward(e: &mut Emitter<'_>, out: Value, inp: Value, n: usize) {
    if e.native() {
        let n = e.int(n as i64);
        e.call("cllm_gelu", &[out, inp, n]);
        return;
    }
    e.lanes(n, |e, lanes, i| {
        let x = e.load(lanes, inp, i, 0);
        let y = emit_gelu_value(e, lanes, x);
        e.store(y, out, i, 0);
    });
}

/// `dinp += dout · gelu'(inp)` over `n` floats.
pub fn emit_gelu_backward(e: &mut Emitter<'_>, dinp: Value, dout: Value, inp: Value, n: usize) {
    if e.native() {
        let n = e.int(n as i64);
        e.call("cllm_gelu_backward", &[dinp, dout, inp, n]);
        return;
    }
    e.lanes(n, |e, lanes, i| {
        let x = e.load(lanes, inp, i, 0);
        let s = gate(e, lanes, x);
        let one = e.constant(lanes, 1.0);
        let three_a = e.constant(lanes, (3.0 * A) as f32);
        let two_k = e.constant(lanes, (2.0 * K) as f32);
        let x2 = e.b.ins().fmul(x, x);
        let du = e.b.ins().fma(three_a, x2, one);
        let du = e.b.ins().fmul(du, two_k); // d(2u)/dx
        let one_minus_s = e.b.ins().fsub(one, s);
        let slope = e.b.ins().fmul(s, one_minus_s);
        let slope = e.b.ins().fmul(slope, du);
        let grad = e.b.ins().fma(x, slope, s);
        let dy = e.load(lanes, dout, i, 0);
        let dx = e.load(lanes, dinp, i, 0);
        let r = e.b.ins().fma(dy, grad, dx);
        e.store(r, dinp, i, 0);
    });
}

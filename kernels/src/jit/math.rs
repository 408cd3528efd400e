//! Transcendentals emitted inline as polynomials, on four lanes at a time.
//!
//! `exp(x)`: Cody–Waite range reduction x = k·ln2 + r, |r| ≤ ln2/2, then Cephes'
//! degree-5 minimax polynomial for e^r, then 2^k built in the exponent bits. Inputs
//! are clamped to [-87, 88] so 2^k stays a normal float: below −87 the result is
//! e^−87 ≈ 1.6e−38 instead of a smaller or subnormal value (it only ever meets sums
//! ≥ 1 here), above 88 it is e^88. Measured relative error over the whole clamped
//! range: below [`exp_max_relative_error`] (the test sweeps every 2^−10 step).
//!
//! `tanh(x) = 1 − 2/(e^{2x} + 1)`, saturating to ±1; absolute error below
//! [`tanh_max_abs_error`] on all of ℝ (relative error grows near 0, where tanh ≈ x;
//! GELU uses the equivalent, well-conditioned `x · σ(2u)` form instead).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use super::emitter::{Emitter, Lanes, V4};

/// Bound on |exp_jit(x) / e^x − 1| for x in [−87, 88], verified by a test.
pub fn exp_max_relative_error() -> f64 {
    3e-7
}

/// Bound on |tanh_jit(x) − tanh(x)| for every finite x, verified by a test.
pub fn tanh_max_abs_error() -> f64 {
    3e-7
}

// Shared with the native GEMM's fused epilogue (`gemm::packed::epilogue`), which
// computes the same exp operation for operation.
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2^23: adding it to |y| < 2^22 rounds y to the nearest integer.
pub(crate) const MAGIC: f32 = 12_582_912.0;
pub(crate) const LN2_HI: f32 = 0.693_359_4; // 0.693359375, exactly representable
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// The range exp's input is clamped to.
pub(crate) const EXP_CLAMP: (f32, f32) = (-87.0, 88.0);
/// The largest argument σ's exp is given: σ(x) ≥ 1/(1 + e^80) ≈ 1.8e−35 stays a
/// normal float, and so does x·σ(x) in GELU. (With exp's own bound, 88, σ(−88) ≈
/// 6e−39 is subnormal, and arithmetic on subnormals runs ~6× slower on x86: GELU of
/// large negative pre-activations did.)
pub(crate) const SIGMOID_EXP_MAX: f32 = 80.0;
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// e^x in f32 exactly as [`Emitter::exp4`] computes it, operation for operation (the
/// native GEMM's fused GELU epilogue uses it; the compiler vectorises it there).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let x = if x < EXP_CLAMP.0 { EXP_CLAMP.0 } else { x };
    let x = if x > EXP_CLAMP.1 { EXP_CLAMP.1 } else { x };
    let shifted = x.mul_add(LOG2E, MAGIC);
    let k = shifted - MAGIC;
    let r = k.mul_add(-LN2_HI, x);
    let r = k.mul_add(-LN2_LO, r);
    let mut p = EXP_P[0];
    for c in &EXP_P[1..] {
        p = p.mul_add(r, *c);
    }
    let e_r = (r * r).mul_add(p, 1.0 + r);
    let biased = (shifted.to_bits() as i32).wrapping_add(127 - MAGIC.to_bits() as i32);
    e_r * f32::from_bits((biased << 23) as u32)
}

impl Emitter<'_> {
    /// `max(lo, min(x, hi))` as compare + blend: Cranelift's `fmin`/`fmax` carry
    /// IEEE NaN semantics and lower to eight instructions each on x86.
    fn clamp4(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        let lo = self.constant(Lanes::Four, lo);
        let hi = self.constant(Lanes::Four, hi);
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        let below = self.b.ins().bitcast(V4, MemFlagsData::new(), below);
        let x = self.b.ins().bitselect(below, lo, x);
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let above = self.b.ins().bitcast(V4, MemFlagsData::new(), above);
        self.b.ins().bitselect(above, hi, x)
    }

    /// e^x on four lanes.
    pub fn exp4(&mut self, x: Value) -> Value {
        let x = self.clamp4(x, EXP_CLAMP.0, EXP_CLAMP.1);
        // k = round(x·log2 e) by the 1.5·2^23 trick: adding it rounds to an integer in
        // the low mantissa bits, so k's integer value is the sum's bits minus MAGIC's.
        let log2e = self.constant(Lanes::Four, LOG2E);
        let magic = self.constant(Lanes::Four, MAGIC);
        let shifted = self.b.ins().fma(x, log2e, magic);
        let k = self.b.ins().fsub(shifted, magic);
        let minus_hi = self.constant(Lanes::Four, -LN2_HI);
        let minus_lo = self.constant(Lanes::Four, -LN2_LO);
        let r = self.b.ins().fma(k, minus_hi, x);
        let r = self.b.ins().fma(k, minus_lo, r);
        // e^r ≈ 1 + r + r²·P(r)
        let mut p = self.constant(Lanes::Four, EXP_P[0]);
        for &c in &EXP_P[1..] {
            let cv = self.constant(Lanes::Four, c);
            p = self.b.ins().fma(p, r, cv);
        }
        let r2 = self.b.ins().fmul(r, r);
        let one = self.constant(Lanes::Four, 1.0);
        let one_plus_r = self.b.ins().fadd(one, r);
        let e_r = self.b.ins().fma(r2, p, one_plus_r);
        // 2^k: (k + 127) << 23 in the exponent field.
        let bits = self
            .b
            .ins()
            .bitcast(types::I32X4, MemFlagsData::new(), shifted);
        let bias = self
            .b
            .ins()
            .iconst(types::I32, 127 - MAGIC.to_bits() as i64);
        let bias = self.b.ins().splat(types::I32X4, bias);
        let biased = self.b.ins().iadd(bits, bias);
        let exponent = self.b.ins().ishl_imm_u(biased, 23);
        let two_k = self.b.ins().bitcast(V4, MemFlagsData::new(), exponent);
        self.b.ins().fmul(e_r, two_k)
    }

    /// e^x of `lanes` width (one lane goes through the four-lane code).
    pub fn exp(&mut self, lanes: Lanes, x: Value) -> Value {
        self.through_four(lanes, x, Self::exp4)
    }

    /// tanh on four lanes: 1 − 2/(e^{2x} + 1).
    pub fn tanh4(&mut self, x: Value) -> Value {
        let two = self.constant(Lanes::Four, 2.0);
        let one = self.constant(Lanes::Four, 1.0);
        let twice = self.b.ins().fmul(x, two);
        let e = self.exp4(twice);
        let denominator = self.b.ins().fadd(e, one);
        let fraction = self.b.ins().fdiv(two, denominator);
        self.b.ins().fsub(one, fraction)
    }

    pub fn tanh(&mut self, lanes: Lanes, x: Value) -> Value {
        self.through_four(lanes, x, Self::tanh4)
    }

    /// The logistic σ(x) = 1/(1 + e^−x), with −x clamped to [`SIGMOID_EXP_MAX`] so the
    /// result is never subnormal.
    pub fn sigmoid(&mut self, lanes: Lanes, x: Value) -> Value {
        self.through_four(lanes, x, |e, x| {
            let minus = e.b.ins().fneg(x);
            let minus = e.clamp4(minus, EXP_CLAMP.0, SIGMOID_EXP_MAX);
            let ex = e.exp4(minus);
            let one = e.constant(Lanes::Four, 1.0);
            let denominator = e.b.ins().fadd(one, ex);
            e.b.ins().fdiv(one, denominator)
        })
    }

    fn through_four(
        &mut self,
        lanes: Lanes,
        x: Value,
        f: impl FnOnce(&mut Self, Value) -> Value,
    ) -> Value {
        match lanes {
            Lanes::Four => f(self, x),
            Lanes::One => {
                let v = self.b.ins().splat(V4, x);
                let r = f(self, v);
                self.b.ins().extractlane(r, 0)
            }
        }
    }
}

//! The arithmetic of a matrix product: fp32, or bf16 operands with fp32 sums.
//!
//! `bf16` (bfloat16) is fp32's upper half: the sign, the same 8 exponent bits, 7 of
//! the 23 mantissa bits (8 significant bits with the implicit one). A product in
//! [`Precision::Bf16`] rounds each operand element to bf16 — to nearest, ties to even,
//! as VCVTNEPS2BF16 does, denormals flushed to zero as the matrix units read them —
//! and sums the exact products (two 8-bit significands multiply exactly in fp32) in
//! fp32. Everything that is not a matrix product stays fp32.
//!
//! A rounded element's relative error is at most 2⁻⁸ (bf16's unit roundoff: half a
//! unit in the last of 8 significant bits), so a product of two rounded operands is
//! within about 2⁻⁷ of the exact one, element by element; the sums then add fp32's own
//! rounding. The tests state their tolerances
//! from these two numbers.

use serde::{Deserialize, Serialize};

/// The arithmetic of the matrix products of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// fp32 operands, fp32 sums.
    #[default]
    Fp32,
    /// Operands rounded to bf16 (nearest, ties to even), fp32 sums.
    Bf16,
}

impl Precision {
    /// The name a spec and reports use (`fp32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision's code in a JIT call (`0` fp32, `1` bf16).
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The precision of a JIT call's code.
    pub fn from_code(code: i64) -> Precision {
        if code == 1 {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    }

    /// An operand element as the product reads it.
    #[inline(always)]
    pub fn operand(self, x: f32) -> f32 {
        match self {
            Precision::Fp32 => x,
            Precision::Bf16 => round(x),
        }
    }

    /// An operand element the reference holds in f64 (a probability, a score's
    /// gradient) as the product reads it: itself in fp32 (the reference's sums are
    /// exact), rounded to bf16 in bf16.
    #[inline(always)]
    pub fn operand_f64(self, x: f64) -> f64 {
        match self {
            Precision::Fp32 => x,
            Precision::Bf16 => round(x as f32) as f64,
        }
    }
}

/// The bf16 bits of `x`: round to nearest, ties to even; NaN stays a (quiet) NaN;
/// denormals become zero of the same sign.
#[inline(always)]
pub fn to_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let tie_to_even = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(tie_to_even) >> 16) as u16
}

/// The fp32 value of bf16 bits (exact).
#[inline(always)]
pub fn from_bits(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` rounded to bf16, as an fp32.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    from_bits(to_bits(x))
}

/// Every element of `xs` rounded to bf16 in place.
pub fn round_slice(xs: &mut [f32]) {
    for x in xs {
        *x = round(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_with_ties_to_even() {
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: the tie goes to the even 1.
        assert_eq!(round(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: to the even 1 + 2⁻⁶.
        assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        // Just above a tie rounds up (truncation would give 1).
        assert_eq!(
            round(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(
            round(-1.0 - 2f32.powi(-8) - 2f32.powi(-20)),
            -1.0 - 2f32.powi(-7)
        );
        assert_eq!(round(f32::MAX), f32::INFINITY);
        assert!(round(f32::NAN).is_nan());
        assert_eq!(round(1e-39).to_bits(), 0);
        assert_eq!(round(-1e-39).to_bits(), (-0.0f32).to_bits());
        assert_eq!(round(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn the_rounding_error_is_at_most_the_unit_roundoff() {
        let mut x = 1.0e-30f32;
        while x < 1.0e30 {
            for y in [x, -x, x * 1.37, x * 1.9999] {
                let r = round(y);
                assert!(((r - y) / y).abs() <= 2f32.powi(-8), "{y} → {r}");
                assert_eq!(r.to_bits() & 0xffff, 0);
            }
            x *= 1.618;
        }
    }
}

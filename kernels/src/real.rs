//! The storage type of a reference kernel: `f32` in training, `f64` in gradient checks.
//! Reductions always accumulate in `f64`, whatever the storage.

use std::borrow::Cow;
use std::fmt::Debug;

use crate::bf16::Precision;

/// A floating-point storage type.
pub trait Real: Copy + Default + Debug + PartialEq + PartialOrd + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}

impl Real for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// Σ a[i]·b[i] in f64, with four independent partial sums so the loop is not one long
/// dependency chain. The summation order is fixed, so the result is deterministic.
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut partial = [0.0f64; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for (lane, sum) in partial.iter_mut().enumerate() {
            *sum += a[4 * i + lane].to_f64() * b[4 * i + lane].to_f64();
        }
    }
    let mut tail = 0.0;
    for i in 4 * chunks..a.len() {
        tail += a[i].to_f64() * b[i].to_f64();
    }
    (partial[0] + partial[1]) + (partial[2] + partial[3]) + tail
}

/// `dst[i] += src[i]`, rounding once per element.
#[inline]
pub fn add_into<T: Real>(dst: &mut [T], src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = T::from_f64(d.to_f64() + s);
    }
}

/// A product's operand as the product reads it: each element rounded to bf16 in
/// [`Precision::Bf16`] (a copy: the reference may allocate), else as it is.
pub fn operand<T: Real>(x: &[T], precision: Precision) -> Cow<'_, [T]> {
    match precision {
        Precision::Fp32 => Cow::Borrowed(x),
        Precision::Bf16 => x
            .iter()
            .map(|&v| T::from_f64(precision.operand(v.to_f64() as f32) as f64))
            .collect(),
    }
}

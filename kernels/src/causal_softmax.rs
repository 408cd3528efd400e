//! The softmax of attention's causal rows, native: for each query row t of a block,
//! `att[t, j] = exp(s·(x_j − max)) / Σ exp(…)` over `j ≤ t` (and < the run's width),
//! zero for the rest of the run. This is `attention::masked_softmax_segments` for the
//! unmasked one-run case (the causal triangle's row of tiles), which the JIT would run
//! four lanes at a time; here it runs at the CPU's full width (16 lanes with AVX-512)
//! with 16 independent max and sum accumulators per row, the exp the JIT's operation
//! for operation ([`crate::jit::math::exp_f32`]).
//!
//! Only the summation order differs from the JIT's (16 partial sums instead of 4), so
//! results agree to rounding; the differential tests compare both with the reference.

use crate::jit::math::exp_f32;

const LANES: usize = 16;

/// Row softmax over `rows` rows of `att` (row stride `stride`) starting at query
/// position `r0`, each over its first `min(width, t + 1)` entries, zero to `width`.
///
/// # Safety
/// `att` holds `rows` rows of `width` floats at stride `stride`.
pub unsafe extern "C" fn cllm_causal_softmax(
    att: *mut f32,
    stride: i64,
    r0: i64,
    rows: i64,
    width: i64,
    scale: f32,
) {
    let (stride, r0, rows, width) = (stride as usize, r0 as usize, rows as usize, width as usize);
    // SAFETY: `att` holds `rows` rows of `width` floats at stride `stride` (the
    // caller's contract); the last row ends at (rows − 1)·stride + width.
    let att = unsafe { std::slice::from_raw_parts_mut(att, (rows.max(1) - 1) * stride + width) };
    crate::cpu::full_width!((att: &mut [f32], stride: usize, r0: usize, rows: usize, width: usize, scale: f32) => {
        for i in 0..rows {
            let row = &mut att[i * stride..i * stride + width];
            let len = width.min(r0 + i + 1);
            let (head, rest) = row.split_at_mut(len);
            softmax(head, scale);
            rest.fill(0.0);
        }
    })
}

/// `x ← exp(s·(x − max x)) / Σ` in place, in chunks of 16 with per-lane accumulators.
#[inline(always)]
fn softmax(x: &mut [f32], scale: f32) {
    let whole = x.len() / LANES * LANES;
    let (chunks, tail) = x.split_at_mut(whole);
    let mut m = [f32::NEG_INFINITY; LANES];
    for chunk in chunks.chunks_exact(LANES) {
        for j in 0..LANES {
            m[j] = if chunk[j] > m[j] { chunk[j] } else { m[j] };
        }
    }
    let mut max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max = tail.iter().copied().fold(max, f32::max);
    let mut s = [0.0f32; LANES];
    for chunk in chunks.chunks_exact_mut(LANES) {
        for j in 0..LANES {
            let e = exp_f32((chunk[j] - max) * scale);
            chunk[j] = e;
            s[j] += e;
        }
    }
    let mut sum: f32 = s.iter().sum();
    for v in tail.iter_mut() {
        *v = exp_f32((*v - max) * scale);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

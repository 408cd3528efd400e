//! The reference: attention exactly as the family's definition (`attention/mod.rs`)
//! states it, plain loops accumulating in f64, storage generic over f32/f64.
//!
//! In bf16 (`precision`) every product's operands are rounded as a product reads them
//! (`Precision::operand`): q, k, v and dout, the probabilities (normalised, as the
//! definition states them) before `P·V` and `Pᵀ·dO`, and the scores' gradient before
//! `dS·K` and `dSᵀ·Q`; the sums stay exact.

use super::shape::AttentionShape;
use crate::bf16::Precision;
use crate::real::{Real, add_into, dot, operand};

/// Row t of head (b, h): its scaled scores `pre[0..=t]` and their log-sum-exp over the
/// kept keys (dropped keys get probability 0 through `kept`).
fn scores<T: Real>(
    pre: &mut [f64],
    qkv: &[T],
    keep: Option<&[T]>,
    shape: AttentionShape,
    (b, h, t): (usize, usize, usize),
) -> f64 {
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = 1.0 / (hs as f64).sqrt();
    let q = &qkv[shape.qkv_row(b, t) + h * hs..][..hs];
    let mut max = f64::NEG_INFINITY;
    for (t2, p) in pre.iter_mut().enumerate().take(t + 1) {
        let k = &qkv[shape.qkv_row(b, t2) + c + h * hs..][..hs];
        let kept = keep.is_none_or(|m| m[t * t_len + t2].to_f64() != 0.0);
        *p = if kept {
            scale * dot(q, k)
        } else {
            f64::NEG_INFINITY
        };
        max = max.max(*p);
    }
    let sum: f64 = pre[..=t].iter().map(|p| (p - max).exp()).sum();
    max + sum.ln()
}

/// Computes `out` and saves each row's log-sum-exp in `lse`; `keep` is the pattern's
/// (T,T) mask, `None` for dense causal attention; the products in `precision`.
pub fn attention_forward<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    qkv: &[T],
    keep: Option<&[T]>,
    shape: AttentionShape,
    precision: Precision,
) {
    let qkv = &operand(qkv, precision)[..];
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let mut pre = vec![0.0f64; t_len];
    let mut acc = vec![0.0f64; hs];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for t in 0..t_len {
                let row_lse = scores(&mut pre, qkv, keep, shape, (b, h, t));
                lse[(b * shape.heads + h) * t_len + t] = T::from_f64(row_lse);
                acc.fill(0.0);
                for (t2, p) in pre.iter().enumerate().take(t + 1) {
                    let a = precision.operand_f64((p - row_lse).exp());
                    let v = &qkv[shape.qkv_row(b, t2) + 2 * c + h * hs..][..hs];
                    for i in 0..hs {
                        acc[i] += a * v[i].to_f64();
                    }
                }
                let o = &mut out[(b * t_len + t) * c + h * hs..][..hs];
                for i in 0..hs {
                    o[i] = T::from_f64(acc[i]);
                }
            }
        }
    }
}

/// Accumulates the gradient of `qkv` from `dout`, recomputing the probabilities from
/// the scores (the saved statistics are the tiled kernel's business: this is the
/// definition). The products in `precision`.
pub fn attention_backward<T: Real>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    keep: Option<&[T]>,
    shape: AttentionShape,
    precision: Precision,
) {
    let (qkv, dout) = (&operand(qkv, precision)[..], &operand(dout, precision)[..]);
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = 1.0 / (hs as f64).sqrt();
    let mut pre = vec![0.0f64; t_len];
    let mut datt = vec![0.0f64; t_len];
    let mut dq = vec![0.0f64; hs];
    let mut dkv = vec![0.0f64; hs];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for t in 0..t_len {
                let row_lse = scores(&mut pre, qkv, keep, shape, (b, h, t));
                let d = &dout[(b * t_len + t) * c + h * hs..][..hs];
                let mut weighted = 0.0;
                for t2 in 0..=t {
                    let v = &qkv[shape.qkv_row(b, t2) + 2 * c + h * hs..][..hs];
                    pre[t2] = (pre[t2] - row_lse).exp();
                    datt[t2] = dot(d, v);
                    weighted += pre[t2] * datt[t2];
                }
                let q_at = shape.qkv_row(b, t) + h * hs;
                dq.fill(0.0);
                for t2 in 0..=t {
                    let a = precision.operand_f64(pre[t2]);
                    let dpre = precision.operand_f64(pre[t2] * (datt[t2] - weighted) * scale);
                    let k_at = shape.qkv_row(b, t2) + c + h * hs;
                    let v_at = k_at + c;
                    for i in 0..hs {
                        dq[i] += dpre * qkv[k_at + i].to_f64();
                        dkv[i] = dpre * qkv[q_at + i].to_f64();
                    }
                    add_into(&mut dqkv[k_at..k_at + hs], &dkv);
                    for i in 0..hs {
                        dkv[i] = a * d[i].to_f64();
                    }
                    add_into(&mut dqkv[v_at..v_at + hs], &dkv);
                }
                add_into(&mut dqkv[q_at..q_at + hs], &dq);
            }
        }
    }
}

/// The decode step of sampling: one new query (its k and v already appended to the
/// cache at position `len − 1`) against the cached keys and values of positions
/// `0..len`. O(len·C) per token instead of O(T²·C) for a whole forward.
///
/// `keep` is the query's row of the pattern's mask (`len` entries), `None` for dense.
///
/// Shapes: q, out (C); k_cache, v_cache (T_max, C); `scratch` at least
/// [`decode_scratch_len`]`(T_max, C, heads)` (the caller allocates it once).
pub fn attention_decode<T: Real>(
    out: &mut [T],
    q: &[T],
    k_cache: &[T],
    v_cache: &[T],
    keep: Option<&[f32]>,
    len: usize,
    (heads, precision): (usize, Precision),
    scratch: &mut [f64],
) {
    let hs = q.len() / heads;
    let cache = DecodeCache {
        k: k_cache,
        v: v_cache,
        keep,
        len,
    };
    for (h, out) in out.chunks_mut(hs).enumerate() {
        attention_decode_head(out, q, cache, (heads, precision), h, scratch);
    }
}

/// The cached keys and values a decode step attends to.
#[derive(Clone, Copy)]
pub struct DecodeCache<'a, T> {
    /// Keys and values of positions `0..len` (T_max, C) each.
    pub k: &'a [T],
    pub v: &'a [T],
    /// The query's row of the pattern's mask, `None` for dense.
    pub keep: Option<&'a [f32]>,
    pub len: usize,
}

/// Head `h` of [`attention_decode`]: writes `out` (hs floats). Heads are independent,
/// so they may run on different threads with the same bits. The products in
/// `precision`, as [`attention_forward`] rounds them.
pub fn attention_decode_head<T: Real>(
    out: &mut [T],
    q: &[T],
    cache: DecodeCache<'_, T>,
    (heads, precision): (usize, Precision),
    h: usize,
    scratch: &mut [f64],
) {
    let read = |x: T| precision.operand_f64(x.to_f64());
    let product = |a: &[T], b: &[T]| match precision {
        Precision::Fp32 => dot(a, b),
        Precision::Bf16 => a.iter().zip(b).map(|(&x, &y)| read(x) * read(y)).sum(),
    };
    let DecodeCache { k, v, keep, len } = cache;
    let c = q.len();
    let hs = c / heads;
    let scale = 1.0 / (hs as f64).sqrt();
    let (pre, acc) = scratch.split_at_mut(len);
    let acc = &mut acc[..hs];
    let qh = &q[h * hs..(h + 1) * hs];
    let kept = |t2: usize| keep.is_none_or(|m| m[t2] != 0.0);
    let mut max = f64::NEG_INFINITY;
    for (t2, p) in pre.iter_mut().enumerate() {
        *p = scale * product(qh, &k[t2 * c + h * hs..][..hs]);
        if kept(t2) {
            max = max.max(*p);
        }
    }
    let mut sum = 0.0;
    for (t2, p) in pre.iter_mut().enumerate() {
        *p = if kept(t2) { (*p - max).exp() } else { 0.0 };
        sum += *p;
    }
    acc.fill(0.0);
    for (t2, p) in pre.iter().enumerate() {
        let v = &v[t2 * c + h * hs..][..hs];
        let a = precision.operand_f64(p / sum);
        for i in 0..hs {
            acc[i] += a * read(v[i]);
        }
    }
    for (y, a) in out.iter_mut().zip(acc.iter()) {
        *y = T::from_f64(*a);
    }
}

/// Scratch floats [`attention_decode`] needs for a context of `t_max` and width `c`.
pub fn decode_scratch_len(t_max: usize, c: usize, heads: usize) -> usize {
    t_max + c / heads
}

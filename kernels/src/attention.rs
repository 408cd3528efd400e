//! Causal multi-head self-attention, the whole of it in one kernel family.
//!
//! Per batch b, head h (head size hs = C/NH, scale s = 1/√hs), query t, key t2 ≤ t:
//!   `pre[t2] = s·(q_t · k_t2)`, `att[t,t2] = softmax_t2(pre)`, `out_t = Σ_t2 att[t,t2]·v_t2`
//! Forward saves one statistic per row, the log-sum-exp `lse_t = log Σ_t2 exp(pre[t2])`,
//! from which backward recomputes `att[t,t2] = exp(pre[t2] − lse_t)` (no T×T buffer):
//!   `datt[t2] = dout_t · v_t2`, `dv_t2 += att[t,t2]·dout_t`,
//!   `dpre[t2] = att[t,t2]·(datt[t2] − Σ_j att[t,j]·datt[j])`,
//!   `dq_t += s·Σ_t2 dpre[t2]·k_t2`, `dk_t2 += s·dpre[t2]·q_t`
//! (`Σ_j att[t,j]·datt[j] = dout_t · out_t`, which is how the tiled kernel gets it.)
//!
//! A sparse pattern restricts t2 further to the keys its mask keeps (`keep[t,t2] = 1`;
//! the diagonal always is): the others get probability exactly 0.
//!
//! Shapes: qkv (B,T,3C) holding q | k | v, head h at channels h·hs..(h+1)·hs of each;
//! out (B,T,C); lse (B,NH,T); keep (T,T) or none (dense).
//!
//! The reference is below; the JIT's kernel is `flash_attention`'s native tiled one.

use crate::real::{Real, add_into, dot};

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttentionShape {
    pub batch: usize,
    pub t_len: usize,
    pub channels: usize,
    pub heads: usize,
}

impl AttentionShape {
    pub(crate) fn head_size(&self) -> usize {
        self.channels / self.heads
    }
    /// Offset of (b, t) in a (B,T,3C) tensor.
    fn qkv_row(&self, b: usize, t: usize) -> usize {
        (b * self.t_len + t) * 3 * self.channels
    }
}

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
/// (T,T) mask, `None` for dense causal attention.
pub fn attention_forward<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    qkv: &[T],
    keep: Option<&[T]>,
    shape: AttentionShape,
) {
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
                    let a = (p - row_lse).exp();
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
/// definition).
pub fn attention_backward<T: Real>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    keep: Option<&[T]>,
    shape: AttentionShape,
) {
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
                    let a = pre[t2];
                    let dpre = a * (datt[t2] - weighted) * scale;
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
/// Shapes: q, out (C); k_cache, v_cache (T_max, C).
pub fn attention_decode<T: Real>(
    out: &mut [T],
    q: &[T],
    k_cache: &[T],
    v_cache: &[T],
    keep: Option<&[f32]>,
    len: usize,
    heads: usize,
) {
    let c = q.len();
    let hs = c / heads;
    let scale = 1.0 / (hs as f64).sqrt();
    let mut pre = vec![0.0f64; len];
    let mut acc = vec![0.0f64; hs];
    for h in 0..heads {
        let qh = &q[h * hs..(h + 1) * hs];
        let kept = |t2: usize| keep.is_none_or(|m| m[t2] != 0.0);
        let mut max = f64::NEG_INFINITY;
        for (t2, p) in pre.iter_mut().enumerate() {
            *p = scale * dot(qh, &k_cache[t2 * c + h * hs..][..hs]);
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
            let v = &v_cache[t2 * c + h * hs..][..hs];
            for i in 0..hs {
                acc[i] += p / sum * v[i].to_f64();
            }
        }
        for i in 0..hs {
            out[h * hs + i] = T::from_f64(acc[i]);
        }
    }
}

// ── Cranelift emitters ────────────────────────────────────────────────────────
// The kernels are `flash_attention`'s native tiled ones (their products are the
// native GEMM, their row passes at the CPU's full width); the JIT calls them with the
// plan's tiles embedded as a table beside the code.

use crate::flash_attention::BlockLists;
use crate::jit::Emitter;
use cranelift_codegen::ir::Value;

/// The shape arguments every attention call ends with.
fn shape_args(e: &mut Emitter<'_>, shape: AttentionShape) -> [Value; 4] {
    [shape.batch, shape.t_len, shape.channels, shape.heads].map(|x| e.int(x as i64))
}

/// `out` and `lse` from `qkv` over the listed tiles; `keep` is a pattern's mask.
pub fn emit_attention_forward(
    e: &mut Emitter<'_>,
    [out, lse, qkv]: [Value; 3],
    keep: Option<Value>,
    shape: AttentionShape,
    blocks: &BlockLists,
) {
    let table = e.table(&blocks.table(shape.t_len));
    let keep = keep.unwrap_or_else(|| e.int(0));
    let [b, t, c, h] = shape_args(e, shape);
    e.call(
        "cllm_flash_attention",
        &[out, lse, qkv, keep, table, b, t, c, h],
    );
}

/// Accumulates `dqkv` from `dout`, the forward's `out` and `lse`, over the same tiles.
pub fn emit_attention_backward(
    e: &mut Emitter<'_>,
    [dqkv, dout, qkv, out, lse]: [Value; 5],
    keep: Option<Value>,
    shape: AttentionShape,
    blocks: &BlockLists,
) {
    let table = e.table(&blocks.table(shape.t_len));
    let keep = keep.unwrap_or_else(|| e.int(0));
    let [b, t, c, h] = shape_args(e, shape);
    e.call(
        "cllm_flash_attention_backward",
        &[dqkv, dout, qkv, out, lse, keep, table, b, t, c, h],
    );
}

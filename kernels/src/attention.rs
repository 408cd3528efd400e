//! Causal multi-head self-attention, the whole of it in one kernel family.
//!
//! Per batch b, head h (head size hs = C/NH, scale s = 1/√hs), query t, key t2 ≤ t:
//!   `pre[t2] = s·(q_t · k_t2)`, `att[t,t2] = softmax_t2(pre)`, `out_t = Σ_t2 att[t,t2]·v_t2`
//! Backward, given dout and the saved `att`:
//!   `datt[t2] = dout_t · v_t2`, `dv_t2 += att[t,t2]·dout_t`,
//!   `dpre[t2] = att[t,t2]·(datt[t2] − Σ_j att[t,j]·datt[j])`,
//!   `dq_t += s·Σ_t2 dpre[t2]·k_t2`, `dk_t2 += s·dpre[t2]·q_t`
//!
//! Shapes: qkv (B,T,3C) holding q | k | v, head h at channels h·hs..(h+1)·hs of each;
//! out (B,T,C); att (B,NH,T,T), zero above the diagonal.

use crate::real::{Real, add_into, dot};

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub batch: usize,
    pub t_len: usize,
    pub channels: usize,
    pub heads: usize,
}

impl AttentionShape {
    fn head_size(&self) -> usize {
        self.channels / self.heads
    }
    /// Offset of (b, t) in a (B,T,3C) tensor.
    fn qkv_row(&self, b: usize, t: usize) -> usize {
        (b * self.t_len + t) * 3 * self.channels
    }
}

/// Computes `out` and saves the attention probabilities in `att`.
pub fn attention_forward<T: Real>(out: &mut [T], att: &mut [T], qkv: &[T], shape: AttentionShape) {
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = 1.0 / (hs as f64).sqrt();
    let mut pre = vec![0.0f64; t_len];
    let mut acc = vec![0.0f64; hs];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for t in 0..t_len {
                let q = &qkv[shape.qkv_row(b, t) + h * hs..][..hs];
                let mut max = f64::NEG_INFINITY;
                for (t2, p) in pre.iter_mut().enumerate().take(t + 1) {
                    let k = &qkv[shape.qkv_row(b, t2) + c + h * hs..][..hs];
                    *p = scale * dot(q, k);
                    max = max.max(*p);
                }
                let mut sum = 0.0;
                for p in pre.iter_mut().take(t + 1) {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let att_row = &mut att[((b * shape.heads + h) * t_len + t) * t_len..][..t_len];
                acc.fill(0.0);
                for t2 in 0..t_len {
                    if t2 > t {
                        att_row[t2] = T::default();
                        continue;
                    }
                    let a = pre[t2] / sum;
                    att_row[t2] = T::from_f64(a);
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

/// Accumulates the gradient of `qkv` from `dout`, using the saved `att`.
pub fn attention_backward<T: Real>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    shape: AttentionShape,
) {
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = 1.0 / (hs as f64).sqrt();
    let mut datt = vec![0.0f64; t_len];
    let mut dq = vec![0.0f64; hs];
    let mut dkv = vec![0.0f64; hs];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for t in 0..t_len {
                let att_row = &att[((b * shape.heads + h) * t_len + t) * t_len..][..t_len];
                let d = &dout[(b * t_len + t) * c + h * hs..][..hs];
                let mut weighted = 0.0;
                for t2 in 0..=t {
                    let v = &qkv[shape.qkv_row(b, t2) + 2 * c + h * hs..][..hs];
                    datt[t2] = dot(d, v);
                    weighted += att_row[t2].to_f64() * datt[t2];
                }
                let q_at = shape.qkv_row(b, t) + h * hs;
                dq.fill(0.0);
                for t2 in 0..=t {
                    let a = att_row[t2].to_f64();
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
/// Shapes: q, out (C); k_cache, v_cache (T_max, C).
pub fn attention_decode<T: Real>(
    out: &mut [T],
    q: &[T],
    k_cache: &[T],
    v_cache: &[T],
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
        let mut max = f64::NEG_INFINITY;
        for (t2, p) in pre.iter_mut().enumerate() {
            *p = scale * dot(qh, &k_cache[t2 * c + h * hs..][..hs]);
            max = max.max(*p);
        }
        let mut sum = 0.0;
        for p in pre.iter_mut() {
            *p = (*p - max).exp();
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

//! Causal multi-head self-attention, the whole of it in one kernel family.
//!
//! Per batch b, head h (head size hs = C/NH, scale s = 1/√hs), query t, key t2 ≤ t:
//!   `pre[t2] = s·(q_t · k_t2)`, `att[t,t2] = softmax_t2(pre)`, `out_t = Σ_t2 att[t,t2]·v_t2`
//! Backward, given dout and the saved `att`:
//!   `datt[t2] = dout_t · v_t2`, `dv_t2 += att[t,t2]·dout_t`,
//!   `dpre[t2] = att[t,t2]·(datt[t2] − Σ_j att[t,j]·datt[j])`,
//!   `dq_t += s·Σ_t2 dpre[t2]·k_t2`, `dk_t2 += s·dpre[t2]·q_t`
//!
//! A sparse pattern restricts t2 further to the keys its mask keeps (`keep[t,t2] = 1`;
//! the diagonal always is): the others get probability exactly 0, so backward, which
//! reads only `att`, needs no mask.
//!
//! Shapes: qkv (B,T,3C) holding q | k | v, head h at channels h·hs..(h+1)·hs of each;
//! out (B,T,C); att (B,NH,T,T), zero above the diagonal; keep (T,T) or none (dense).

use crate::real::{Real, add_into, dot};

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Computes `out` and saves the attention probabilities in `att`; `keep` is the
/// pattern's (T,T) mask, `None` for dense causal attention.
pub fn attention_forward<T: Real>(
    out: &mut [T],
    att: &mut [T],
    qkv: &[T],
    keep: Option<&[T]>,
    shape: AttentionShape,
) {
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = 1.0 / (hs as f64).sqrt();
    let mut pre = vec![0.0f64; t_len];
    let mut acc = vec![0.0f64; hs];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for t in 0..t_len {
                let q = &qkv[shape.qkv_row(b, t) + h * hs..][..hs];
                let kept = |t2: usize| keep.is_none_or(|m| m[t * t_len + t2].to_f64() != 0.0);
                let mut max = f64::NEG_INFINITY;
                for (t2, p) in pre.iter_mut().enumerate().take(t + 1) {
                    let k = &qkv[shape.qkv_row(b, t2) + c + h * hs..][..hs];
                    *p = scale * dot(q, k);
                    if kept(t2) {
                        max = max.max(*p);
                    }
                }
                let mut sum = 0.0;
                for (t2, p) in pre.iter_mut().enumerate().take(t + 1) {
                    *p = if kept(t2) { (*p - max).exp() } else { 0.0 };
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
// Run-time loops over (b, h); products by the native GEMM; the softmax in place in
// the `att` rows, with the causal length t + 1 known only at run time. The dense
// kernels are `block_attention.rs`'s with a single T×T tile; this file keeps the
// helpers both share.

use crate::block_attention::{
    BlockLists, emit_block_attention_backward, emit_block_attention_forward,
};
use crate::jit::{Emitter, Lanes};
use cranelift_codegen::ir::{InstBuilder, Value};

/// Pointer to head `h` of part `part` (0 q, 1 k, 2 v) of position (b, t) in qkv.
fn qkv_head(
    e: &mut Emitter<'_>,
    qkv: Value,
    shape: AttentionShape,
    b: Value,
    t: Value,
    part: usize,
    h: Value,
) -> Value {
    let c = shape.channels;
    let row = e.b.ins().imul_imm_s(b, shape.t_len as i64);
    let row = e.b.ins().iadd(row, t);
    let base = e.row(qkv, row, 3 * c);
    let offset = e.b.ins().imul_imm_s(h, shape.head_size() as i64);
    let offset = e.b.ins().iadd_imm_s(offset, (part * c) as i64);
    e.element(base, offset)
}

/// Runs `body(b, h)` for every batch row and head as run-time loops: one copy of
/// the body whatever B and NH are (compile time stays flat).
pub(crate) fn for_each_head(
    e: &mut Emitter<'_>,
    shape: AttentionShape,
    mut body: impl FnMut(&mut Emitter<'_>, Value, Value),
) {
    e.for_n(0, shape.batch as i64, 1, |e, b| {
        e.for_n(0, shape.heads as i64, 1, |e, h| body(e, b, h));
    });
}

/// Index of row t of head (b, h) among the (B, NH, T) rows of `att`.
fn att_row_index(
    e: &mut Emitter<'_>,
    shape: AttentionShape,
    b: Value,
    h: Value,
    t: Value,
) -> Value {
    let bh = e.b.ins().imul_imm_s(b, shape.heads as i64);
    let bh = e.b.ins().iadd(bh, h);
    let index = e.b.ins().imul_imm_s(bh, shape.t_len as i64);
    e.b.ins().iadd(index, t)
}

/// Pointer to head h of row (b, t) of a (B, T, C) tensor.
pub(crate) fn bt_head(
    e: &mut Emitter<'_>,
    base: Value,
    shape: AttentionShape,
    b: Value,
    t: Value,
    h: Value,
) -> Value {
    let row = e.b.ins().imul_imm_s(b, shape.t_len as i64);
    let row = e.b.ins().iadd(row, t);
    let p = e.row(base, row, shape.channels);
    let offset = e.b.ins().imul_imm_s(h, shape.head_size() as i64);
    e.element(p, offset)
}

/// The softmax of row t over `segments` (start, length) of the row, in place. A
/// segment that reaches past t (the diagonal block) counts only up to t and is zeroed
/// beyond. With a pattern, `keep` points at row t of its (T,T) mask: entries it drops
/// are left out of the maximum (pushed down by 2^100) and multiplied by 0 after exp.
pub(crate) fn masked_softmax_segments(
    e: &mut Emitter<'_>,
    row: Value,
    keep: Option<Value>,
    t: Value,
    segments: &[(usize, usize)],
    scale: f32,
) {
    // Each segment: its row pointer, mask pointer and causal length (≤ its size).
    let parts: Vec<(Value, Option<Value>, Value, usize)> = segments
        .iter()
        .map(|&(start, size)| {
            let at = e.int(start as i64);
            let pointer = e.element(row, at);
            let mask = keep.map(|k| e.element(k, at));
            // min(size, t + 1 − start): past the diagonal nothing counts.
            let reach = e.b.ins().iadd_imm_s(t, 1 - start as i64);
            let cap = e.int(size as i64);
            let len = e.b.ins().smin(reach, cap);
            (pointer, mask, len, size)
        })
        .collect();
    let neg4 = e.constant(Lanes::Four, f32::NEG_INFINITY);
    let neg1 = e.constant(Lanes::One, f32::NEG_INFINITY);
    let (m4, m1) = (e.var(neg4), e.var(neg1));
    for &(row, keep, len, _) in &parts {
        e.lanes_dyn(len, |e, lanes, i| {
            let x = e.load(lanes, row, i, 0);
            let x = match keep {
                // x + (keep − 1)·2^100: x where kept, about −2^100 where dropped.
                Some(keep) => {
                    let k = e.load(lanes, keep, i, 0);
                    let one = e.constant(lanes, 1.0);
                    let big = e.constant(lanes, 2f32.powi(100));
                    let off = e.b.ins().fsub(k, one);
                    e.b.ins().fma(off, big, x)
                }
                None => x,
            };
            let var = if lanes == Lanes::Four { m4 } else { m1 };
            let m = e.get(var);
            let m = e.b.ins().fmax(m, x);
            e.set(var, m);
        });
    }
    let m = e.get(m4);
    let m = e.max_lanes(m);
    let tail = e.get(m1);
    let max = e.b.ins().fmax(m, tail);
    let zero4 = e.constant(Lanes::Four, 0.0);
    let zero1 = e.constant(Lanes::One, 0.0);
    let (s4, s1) = (e.var(zero4), e.var(zero1));
    for &(row, keep, len, _) in &parts {
        e.lanes_dyn(len, |e, lanes, i| {
            let x = e.load(lanes, row, i, 0);
            let mw = e.widen(lanes, max);
            let d = e.b.ins().fsub(x, mw);
            let sc = e.constant(lanes, scale);
            let d = e.b.ins().fmul(d, sc);
            let ex = e.exp(lanes, d);
            let ex = match keep {
                Some(keep) => {
                    let k = e.load(lanes, keep, i, 0);
                    e.b.ins().fmul(ex, k)
                }
                None => ex,
            };
            e.store(ex, row, i, 0);
            let var = if lanes == Lanes::Four { s4 } else { s1 };
            let acc = e.get(var);
            let acc = e.b.ins().fadd(acc, ex);
            e.set(var, acc);
        });
    }
    let s = e.get(s4);
    let s = e.sum_lanes(s);
    let tail = e.get(s1);
    let sum = e.b.ins().fadd(s, tail);
    let one = e.b.ins().f32const(1.0);
    let inv = e.b.ins().fdiv(one, sum);
    for &(row, _, len, size) in &parts {
        e.lanes_dyn(len, |e, lanes, i| {
            let x = e.load(lanes, row, i, 0);
            let iv = e.widen(lanes, inv);
            let r = e.b.ins().fmul(x, iv);
            e.store(r, row, i, 0);
        });
        let end = e.int(size as i64);
        e.for_range(len, end, 1, |e, t2| {
            let z = e.b.ins().f32const(0.0);
            e.store(z, row, t2, 0);
        });
    }
}

/// The q, k, v pointers of head (b, h) at position 0, and its T×T block of `att`.
pub(crate) struct HeadPointers {
    pub q: Value,
    pub k: Value,
    pub v: Value,
    pub att: Value,
    pub zero: Value,
}

pub(crate) fn head_pointers(
    e: &mut Emitter<'_>,
    qkv: Value,
    att: Value,
    shape: AttentionShape,
    b: Value,
    h: Value,
) -> HeadPointers {
    let zero = e.int(0);
    HeadPointers {
        q: qkv_head(e, qkv, shape, b, zero, 0, h),
        k: qkv_head(e, qkv, shape, b, zero, 1, h),
        v: qkv_head(e, qkv, shape, b, zero, 2, h),
        att: att_block(e, att, shape, b, h),
        zero,
    }
}

/// Pointer to the T×T block of head (b, h) in `att`.
fn att_block(e: &mut Emitter<'_>, att: Value, shape: AttentionShape, b: Value, h: Value) -> Value {
    let zero = e.int(0);
    let index = att_row_index(e, shape, b, h, zero);
    e.row(att, index, shape.t_len)
}

/// Causal attention forward over the full square: the block-sparse kernel with one
/// T×T tile, so per head `pre = Q·Kᵀ` and `out = att·V` are single native GEMMs (the
/// zeroed upper half costs twice the causal FLOPs but runs at GEMM speed), with the
/// masked, scaled softmax row by row in between. `keep` is a sparse pattern's (T,T)
/// mask when the planner chose dense products for it.
pub fn emit_attention_forward(
    e: &mut Emitter<'_>,
    out: Value,
    att: Value,
    qkv: Value,
    keep: Option<Value>,
    shape: AttentionShape,
) {
    let whole = BlockLists::whole(shape.t_len);
    emit_block_attention_forward(e, out, att, qkv, keep, shape, &whole);
}

/// Causal attention backward over the full square, with the T×T `workspace`:
/// `datt = dout·Vᵀ`; `dpre = s·att ⊙ (datt − rowsum(att ⊙ datt))`;
/// `dQ += dpre·K`, `dK += dpreᵀ·Q`, `dV += attᵀ·dout` — four GEMMs and a row pass
/// (the block-sparse kernel with one T×T tile).
pub fn emit_attention_backward(
    e: &mut Emitter<'_>,
    dqkv: Value,
    dout: Value,
    qkv: Value,
    att: Value,
    workspace: Value,
    shape: AttentionShape,
) {
    let whole = BlockLists::whole(shape.t_len);
    emit_block_attention_backward(e, dqkv, dout, qkv, att, workspace, shape, &whole);
}

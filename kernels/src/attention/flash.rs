//! Tiled ("flash") attention: the math of the family (`attention/mod.rs`), computed one query block at
//! a time over only the key blocks the pattern lists, with no T×T buffer anywhere.
//!
//! Forward, per head and query block (rows r0..r0+R), for each chunk of its listed key
//! columns (at most [`CHUNK`] at a time, in ascending order):
//!
//! ```text
//! S = s·Q·Kᵀ (R × n, masked)      m' = max(m, rowmax S)      P = exp(S − m')
//! l = l·exp(m − m') + rowsum P     O = O·exp(m − m') + P·V     (the online softmax)
//! ```
//!
//! then `O /= l` and `lse = m + ln l` is saved per row. Backward recomputes each tile's
//! probabilities from `lse` and needs `D = rowsum(dO ⊙ O)` once per row:
//!
//! ```text
//! P = exp(s·Q·Kᵀ − lse)     dP = dO·Vᵀ     dS = s·P ⊙ (dP − D)
//! dQ += dS·K     dK += dSᵀ·Q     dV += Pᵀ·dO
//! ```
//!
//! The products are the native GEMM on this thread ([`crate::gemm::sgemm`]); the row passes
//! are plain loops compiled at the CPU's full width ([`crate::cpu::full_width`]), the
//! exp the JIT's operation for operation. Heads are independent tasks (spread over the
//! caller's GEMM threads), each summed in one fixed order, so the bits do not depend on
//! the thread count. Scratch is two R × CHUNK tiles per thread, allocated on a thread's
//! first call (like the GEMM's packing buffers). The backward half is
//! `flash_backward.rs`; the tiles and their table are `tiles.rs`.

use std::cell::RefCell;

use super::products::{Products, carve, carved_len};
use super::shape::AttentionShape;
use super::tiles::{CHUNK, query_blocks, table_len};
use crate::bf16::Precision;
use crate::jit::math::exp_f32;

/// Added to a dropped key's score (times 1 − keep) so it never wins the row maximum.
const DROPPED: f32 = 1.267_650_6e30; // 2^100

thread_local! {
    /// This thread's tiles (scores or probabilities, their gradients) and row
    /// statistics, grown on first use to the largest block seen, never again.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `body` with `len` floats of this thread's scratch.
pub(crate) fn with_scratch<R>(len: usize, body: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        body(&mut s[..len])
    })
}

/// The raw operands of one call: every pointer at (b = 0, t = 0, head 0).
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    pub shape: AttentionShape,
    pub keep: *const f32,
    pub precision: Precision,
}

// SAFETY: heads write disjoint parts of the outputs (see the callers).
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

/// Runs `head(b, h)` for every head, spread over the caller's GEMM threads.
pub(crate) fn for_each_head(shape: AttentionShape, head: impl Fn(usize, usize) + Sync + Send) {
    let heads = shape.batch * shape.heads;
    if crate::gemm::sgemm::gemm_threads() > 1 && heads > 1 {
        use rayon::prelude::*;
        (0..heads)
            .into_par_iter()
            .for_each(|i| head(i / shape.heads, i % shape.heads));
    } else {
        (0..heads).for_each(|i| head(i / shape.heads, i % shape.heads));
    }
}

/// The head after (b, h) in [`for_each_head`]'s order, if any.
pub(crate) fn next_head(shape: AttentionShape, b: usize, h: usize) -> Option<(usize, usize)> {
    match (h + 1 < shape.heads, b + 1 < shape.batch) {
        (true, _) => Some((b, h + 1)),
        (false, true) => Some((b + 1, 0)),
        (false, false) => None,
    }
}

/// Asks for rows `r0..r0 + rows` of `floats` columns of each matrix (its first row's
/// pointer and its row stride in floats) into L2, one query block of the next head
/// per query block of this one: a head's rows sit 3C or C floats apart, a stride the
/// hardware prefetcher did not follow. In a bench-s bf16 step, whose activations come
/// from memory, the backward ran at ~105 GFLOP/s a thread against 126 with its
/// operands in cache; asked for ahead, the backward gained ~7% and the forward ~1%.
pub(crate) fn prefetch_rows(
    matrices: &[(*const f32, usize)],
    (r0, rows): (usize, usize),
    floats: usize,
) {
    #[cfg(target_arch = "x86_64")]
    for &(base, ld) in matrices {
        for r in r0..r0 + rows {
            let row = base.wrapping_add(r * ld) as usize;
            let (first, last) = (row & !63, (row + 4 * floats - 1) & !63);
            for line in (first..=last).step_by(64) {
                use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                // SAFETY: a prefetch never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(line as *const i8) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (matrices, r0, rows, floats);
}

/// A score as the softmax sees it: `s·x`, pushed down by 2^100 where `k` (the key's
/// keep mask) drops it.
#[inline(always)]
fn scaled(x: f32, k: Option<f32>, scale: f32) -> f32 {
    match k {
        Some(k) => (k - 1.0).mul_add(DROPPED, x * scale),
        None => x * scale,
    }
}

/// The maximum of [`scaled`] over the row's first `x.len()` keys (the rest are past the
/// diagonal); nothing is written: [`exp_scaled`] and [`exp_scaled_row`] scale again
/// as they go (one pass over the row fewer than writing the scaled scores; the same
/// values, so the same bits).
#[inline(always)]
pub(crate) fn scaled_max(x: &[f32], keep: Option<&[f32]>, scale: f32) -> f32 {
    const L: usize = 16;
    let mut m = [f32::NEG_INFINITY; L];
    let whole = x.len() / L * L;
    // One loop per case, each over whole chunks, so that both are vectorised.
    match keep {
        Some(k) => {
            for (chunk, k) in x[..whole].chunks_exact(L).zip(k[..whole].chunks_exact(L)) {
                for j in 0..L {
                    let v = scaled(chunk[j], Some(k[j]), scale);
                    m[j] = if v > m[j] { v } else { m[j] };
                }
            }
        }
        None => {
            for chunk in x[..whole].chunks_exact(L) {
                for j in 0..L {
                    let v = scaled(chunk[j], None, scale);
                    m[j] = if v > m[j] { v } else { m[j] };
                }
            }
        }
    }
    let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (whole..x.len())
        .map(|j| scaled(x[j], keep.map(|k| k[j]), scale))
        .fold(max, f32::max)
}

/// `x ← exp(scaled(x) − shift)·keep` in place; returns Σ x (16 partial sums).
#[inline(always)]
pub(crate) fn exp_scaled(x: &mut [f32], keep: &[f32], scale: f32, shift: f32) -> f32 {
    const L: usize = 16;
    let mut s = [0.0f32; L];
    let (n, whole) = (x.len(), x.len() / L * L);
    let (body, tail) = x.split_at_mut(whole);
    let (k_body, k_tail) = keep[..n].split_at(whole);
    for (chunk, k) in body.chunks_exact_mut(L).zip(k_body.chunks_exact(L)) {
        for j in 0..L {
            let e = exp_f32(scaled(chunk[j], Some(k[j]), scale) - shift) * k[j];
            chunk[j] = e;
            s[j] += e;
        }
    }
    let mut sum: f32 = s.iter().sum();
    for (v, k) in tail.iter_mut().zip(k_tail) {
        *v = exp_f32(scaled(*v, Some(*k), scale) - shift) * k;
        sum += *v;
    }
    sum
}

/// [`exp_scaled`] without a mask on `row[..valid]`: when the row holds the whole chunk
/// of 16 around the last `valid % 16` elements, that tail runs as one vector (the
/// lanes past `valid` get values the caller then zeroes) instead of up to 15 scalar
/// exps, and is summed after the lanes in the same order.
#[inline(always)]
pub(crate) fn exp_scaled_row(row: &mut [f32], valid: usize, scale: f32, shift: f32) -> f32 {
    const L: usize = 16;
    let mut s = [0.0f32; L];
    let whole = valid / L * L;
    for chunk in row[..whole].chunks_exact_mut(L) {
        for j in 0..L {
            let e = exp_f32(scaled(chunk[j], None, scale) - shift);
            chunk[j] = e;
            s[j] += e;
        }
    }
    let mut sum: f32 = s.iter().sum();
    if valid > whole && whole + L <= row.len() {
        let chunk = &mut row[whole..whole + L];
        for v in chunk.iter_mut() {
            *v = exp_f32(scaled(*v, None, scale) - shift);
        }
        for &v in &chunk[..valid - whole] {
            sum += v;
        }
    } else {
        for v in row[whole..valid].iter_mut() {
            *v = exp_f32(scaled(*v, None, scale) - shift);
            sum += *v;
        }
    }
    sum
}

/// The online softmax of one chunk: the tile `s` (rows × n at stride `ld`, query rows
/// from r0, key columns from c0) becomes probabilities against the running maxima `m`
/// and sums `l`; `alpha[i]` is the factor row i's earlier output must be scaled by.
/// `keep` is the mask from (r0, c0) on, at stride `k_ld`.
fn online_softmax(
    s: &mut [f32],
    ld: usize,
    at: (usize, usize, usize),
    keep: Option<(&[f32], usize)>,
    scale: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    crate::cpu::full_width!((s: &mut [f32], ld: usize, at: (usize, usize, usize), keep: Option<(&[f32], usize)>, scale: f32, m: &mut [f32], l: &mut [f32], alpha: &mut [f32]) => {
        let (r0, c0, n) = at;
        for i in 0..m.len() {
            let valid = (r0 + i + 1 - c0).min(n);
            let row = &mut s[i * ld..i * ld + n];
            let keep = keep.map(|(k, k_ld)| &k[i * k_ld..i * k_ld + valid]);
            let max = scaled_max(&row[..valid], keep, scale).max(m[i]);
            let a = exp_f32(m[i] - max);
            let sum = match keep {
                None => exp_scaled_row(row, valid, scale, max),
                Some(k) => exp_scaled(&mut row[..valid], k, scale, max),
            };
            row[valid..].fill(0.0);
            l[i] = l[i] * a + sum;
            m[i] = max;
            alpha[i] = a;
        }
    })
}

/// Multiplies row i of the rows × hs block at `o` (row stride `ld`) by `factor[i]`.
unsafe fn scale_rows(o: *mut f32, ld: usize, hs: usize, factor: &[f32]) {
    for (i, &f) in factor.iter().enumerate() {
        // SAFETY: the caller's block holds these rows.
        let row = unsafe { std::slice::from_raw_parts_mut(o.add(i * ld), hs) };
        row.iter_mut().for_each(|x| *x *= f);
    }
}

/// Attention forward of every head: `out` and the rows' log-sum-exp `lse`, the
/// products in the precision of code `precision` ([`Precision::from_code`]).
///
/// # Safety
/// Pointers to tensors of `shape` (qkv (B,T,3C), out (B,T,C), lse (B,NH,T), keep
/// (T,T) or null), `table` built by [`BlockLists::table`] for this T.
pub unsafe extern "C" fn cllm_flash_attention(
    out: *mut f32,
    lse: *mut f32,
    qkv: *const f32,
    keep: *const f32,
    table: *const u32,
    batch: i64,
    t_len: i64,
    channels: i64,
    heads: i64,
    precision: i64,
) {
    let shape = AttentionShape {
        batch: batch as usize,
        t_len: t_len as usize,
        channels: channels as usize,
        heads: heads as usize,
    };
    // SAFETY: the caller's contract.
    unsafe {
        let table = std::slice::from_raw_parts(table, table_len(table));
        let precision = Precision::from_code(precision);
        let raw = Raw {
            shape,
            keep,
            precision,
        };
        let io = [out as usize, lse as usize, qkv as usize];
        for_each_head(shape, |b, h| forward_head(raw, io, table, b, h));
    }
}

/// One head of the forward (see the module doc). Heads write disjoint rows of `lse`
/// and disjoint columns of `out`.
unsafe fn forward_head(raw: Raw, [out, lse, qkv]: [usize; 3], table: &[u32], b: usize, h: usize) {
    let AttentionShape {
        t_len,
        channels: c,
        heads,
        ..
    } = raw.shape;
    let hs = raw.shape.head_size();
    let scale = (1.0 / (hs as f64).sqrt()) as f32;
    let (ld_qkv, ld_o) = (3 * c as isize, c as isize);
    let (block, blocks) = query_blocks(table, t_len);
    let products = Products::for_block(block, raw.precision);
    let ld = CHUNK.max(block);
    let lens = [
        block * ld,                // the tile: scores, then probabilities
        3 * block,                 // the rows' max, sum and rescaling factor
        products.b_len(hs, t_len), // Kᵀ, packed once per head
        products.b_len(t_len, hs), // V, packed once per head
        products.a_len(block, hs), // Q of the query block, packed once per block
        products.a_len(block, ld), // P of a chunk
    ];
    // SAFETY: every pointer below is inside the caller's tensors.
    unsafe {
        let q0 = (qkv as *const f32).add(b * t_len * 3 * c + h * hs);
        let (k0, v0) = (q0.add(c), q0.add(2 * c));
        let o0 = (out as *mut f32).add(b * t_len * c + h * hs);
        let lse0 = (lse as *mut f32).add((b * heads + h) * t_len);
        with_scratch(carved_len(&lens), |scratch| {
            let [tile, stats, kt_pack, v_pack, q_pack, p_pack] = carve(scratch, lens);
            let kt = products.b(kt_pack, (k0, 1, ld_qkv), [hs, t_len]);
            let v = products.b(v_pack, (v0, ld_qkv, 1), [t_len, hs]);
            let next = next_head(raw.shape, b, h).map(|(nb, nh)| {
                let q = (qkv as *const f32).wrapping_add(nb * t_len * 3 * c + nh * hs);
                [
                    (q, 3 * c),
                    (q.wrapping_add(c), 3 * c),
                    (q.wrapping_add(2 * c), 3 * c),
                ]
            });
            for qb in blocks {
                let (r0, rows) = (qb.r0, qb.rows);
                if let Some(next) = &next {
                    prefetch_rows(next, (r0, rows), hs);
                }
                let (m, rest) = stats.split_at_mut(block);
                let (l, alpha) = rest.split_at_mut(block);
                let (m, l, alpha) = (&mut m[..rows], &mut l[..rows], &mut alpha[..rows]);
                m.fill(f32::NEG_INFINITY);
                l.fill(0.0);
                let q = products.a(q_pack, (q0.add(r0 * 3 * c), ld_qkv, 1), [rows, hs]);
                let o = o0.add(r0 * c);
                for (i, (c0, n)) in qb.chunks().enumerate() {
                    let s = (tile.as_ptr(), ld as isize, 1);
                    products.mul([rows, n, hs], s, q, kt.columns_from(c0), false);
                    let keep = (!raw.keep.is_null()).then(|| {
                        let from = raw.keep.add(r0 * t_len + c0);
                        (
                            std::slice::from_raw_parts(from, (rows - 1) * t_len + n),
                            t_len,
                        )
                    });
                    online_softmax(tile, ld, (r0, c0, n), keep, scale, m, l, alpha);
                    if i > 0 {
                        scale_rows(o, c, hs, alpha);
                    }
                    let p = products.a(p_pack, s, [rows, n]);
                    let dst = (o as *const f32, ld_o, 1);
                    products.mul([rows, hs, n], dst, p, v.depth_from(c0), i > 0);
                }
                for i in 0..rows {
                    let inv = 1.0 / l[i];
                    alpha[i] = inv;
                    *lse0.add(r0 + i) = m[i] + l[i].ln();
                }
                scale_rows(o, c, hs, alpha);
            }
        });
    }
}

//! The backward half of `flash.rs` (the math is in the family's doc, `attention/mod.rs`): per
//! head and query block, `D = rowsum(dO ⊙ O)`, then for each chunk of listed keys the
//! probabilities recomputed from the saved log-sum-exp and five products,
//! `S = Q·Kᵀ`, `dP = dO·Vᵀ`, `dQ += dS·K`, `dK += dSᵀ·Q`, `dV += Pᵀ·dO`.
//! Every gradient is accumulated (`+=`) in one fixed order per head.

use super::flash::{Raw, for_each_head, next_head, prefetch_rows, with_scratch};
use super::products::{Products, carve, carved_len};
use super::shape::AttentionShape;
use super::tiles::{CHUNK, query_blocks, table_len};
use crate::bf16::Precision;
use crate::jit::math::exp_f32;

/// The probabilities and score gradients of one chunk: `p` holds the scores Q·Kᵀ and
/// becomes `P = exp(s·S − lse)·keep`; `ds` holds `dP = dO·Vᵀ` and becomes
/// `s·P ⊙ (dP − D)`; both zero past the diagonal. Rows × n at stride `ld`, query rows
/// from r0, key columns from c0; `keep` from (r0, c0) on at its stride.
fn probabilities_and_gradients(
    p: &mut [f32],
    ds: &mut [f32],
    ld: usize,
    at: (usize, usize, usize),
    keep: Option<(&[f32], usize)>,
    scale: f32,
    lse: &[f32],
    d: &[f32],
) {
    crate::cpu::full_width!((p: &mut [f32], ds: &mut [f32], ld: usize, at: (usize, usize, usize), keep: Option<(&[f32], usize)>, scale: f32, lse: &[f32], d: &[f32]) => {
        let (r0, c0, n) = at;
        for i in 0..lse.len() {
            let valid = (r0 + i + 1 - c0).min(n);
            let (p_row, ds_row) = (&mut p[i * ld..i * ld + n], &mut ds[i * ld..i * ld + n]);
            let (li, di) = (lse[i], d[i]);
            match keep {
                Some((k, k_ld)) => {
                    let k = &k[i * k_ld..i * k_ld + valid];
                    for j in 0..valid {
                        let a = exp_f32(p_row[j].mul_add(scale, -li)) * k[j];
                        p_row[j] = a;
                        ds_row[j] = a * (ds_row[j] - di) * scale;
                    }
                }
                None => {
                    // Whole vectors up to the one holding the row's last valid element
                    // where the row has room for it (the lanes past `valid` are zeroed
                    // below), instead of a scalar tail of up to 15 exps.
                    const L: usize = 16;
                    let whole = valid / L * L;
                    let cover = if valid > whole && whole + L <= n { whole + L } else { whole };
                    let (p_body, ds_body) = (&mut p_row[..cover], &mut ds_row[..cover]);
                    for (pc, dc) in p_body.chunks_exact_mut(L).zip(ds_body.chunks_exact_mut(L)) {
                        for j in 0..L {
                            let a = exp_f32(pc[j].mul_add(scale, -li));
                            pc[j] = a;
                            dc[j] = a * (dc[j] - di) * scale;
                        }
                    }
                    for j in cover..valid {
                        let a = exp_f32(p_row[j].mul_add(scale, -li));
                        p_row[j] = a;
                        ds_row[j] = a * (ds_row[j] - di) * scale;
                    }
                }
            }
            p_row[valid..].fill(0.0);
            ds_row[valid..].fill(0.0);
        }
    })
}

/// `d[i] = dO_i · O_i` for rows × hs blocks at stride `ld`, with dO as the products
/// read it (rounded in bf16: then `D = Σ_j P_j·(dO·v_j)` of the products' own dO, as
/// the reference sums it).
unsafe fn row_dots(
    d: &mut [f32],
    dout: *const f32,
    out: *const f32,
    (ld, hs): (usize, usize),
    precision: Precision,
) {
    for (i, di) in d.iter_mut().enumerate() {
        // SAFETY: the caller's blocks hold these rows.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(dout.add(i * ld), hs),
                std::slice::from_raw_parts(out.add(i * ld), hs),
            )
        };
        *di = dot(a, b, precision);
    }
}

/// Lanes of [`dot`]'s partial sums: one 512-bit vector (two 256-bit ones).
const DOT_LANES: usize = 16;

/// `Σ operand(a_j)·b_j` as [`DOT_LANES`] partial sums (element j into lane j mod 16,
/// in order), then those lanes added pairwise (0+8, 1+9, …, then 0+4, …): a fixed order
/// on every CPU and thread count, products and sums rounded separately (no FMA), so
/// the vector and scalar code give the same bits. (A single running sum was one
/// dependent add per element: 9% of the bf16 backward of bench-s's heads.)
fn dot(a: &[f32], b: &[f32], precision: Precision) -> f32 {
    let mut sums = [0.0f32; DOT_LANES];
    let lanes = &mut sums;
    crate::cpu::full_width!((lanes: &mut [f32; DOT_LANES], a: &[f32], b: &[f32], precision: Precision) => {
        let whole = a.len() / DOT_LANES * DOT_LANES;
        for (ac, bc) in a[..whole].chunks_exact(DOT_LANES).zip(b[..whole].chunks_exact(DOT_LANES)) {
            for l in 0..DOT_LANES {
                lanes[l] += precision.operand(ac[l]) * bc[l];
            }
        }
        for (l, (x, y)) in a[whole..].iter().zip(&b[whole..]).enumerate() {
            lanes[l] += precision.operand(*x) * y;
        }
    });
    let mut width = DOT_LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            sums[l] += sums[l + width];
        }
    }
    sums[0]
}

/// Attention backward of every head: accumulates into `dqkv`; the products in the
/// precision of code `precision`.
///
/// # Safety
/// As [`super::flash::cllm_flash_attention`], with dqkv (B,T,3C), dout and out
/// (B,T,C), lse (B,NH,T) as the forward saved it.
pub unsafe extern "C" fn cllm_flash_attention_backward(
    dqkv: *mut f32,
    dout: *const f32,
    qkv: *const f32,
    out: *const f32,
    lse: *const f32,
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
        let io = [dqkv, dout, qkv, out, lse].map(|p| p as usize);
        for_each_head(shape, |b, h| backward_head(raw, io, table, b, h));
    }
}

/// One head of the backward. Heads write disjoint columns of `dqkv`.
unsafe fn backward_head(
    raw: Raw,
    [dqkv, dout, qkv, out, lse]: [usize; 5],
    table: &[u32],
    b: usize,
    h: usize,
) {
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
    let ld = CHUNK.max(block);
    let products = Products::for_block(block, raw.precision);
    let lens = [
        block * ld,                                   // P of a chunk
        block * ld,                                   // dP, then dS
        block,                                        // D of the query block's rows
        products.b_len(hs, t_len),                    // Kᵀ, packed once per head
        products.b_len(hs, t_len),                    // Vᵀ, packed once per head
        products.b_len(t_len, hs),                    // K, packed once per head
        products.a_len(block, hs),                    // Q of the query block, as A
        products.a_len(block, hs),                    // dO of the query block, as A
        products.b_len(block, hs),                    // Q of the query block, as B
        products.b_len(block, hs),                    // dO of the query block, as B
        products.a_len(block.max(ld), block.max(ld)), // dS, dSᵀ or Pᵀ of a chunk
    ];
    // SAFETY: every pointer below is inside the caller's tensors.
    unsafe {
        let at = b * t_len * 3 * c + h * hs;
        let q0 = (qkv as *const f32).add(at);
        let (k0, v0) = (q0.add(c), q0.add(2 * c));
        let dq0 = (dqkv as *mut f32).add(at) as *const f32;
        let (dk0, dv0) = (dq0.add(c), dq0.add(2 * c));
        let o_at = b * t_len * c + h * hs;
        let (do0, o0) = (
            (dout as *const f32).add(o_at),
            (out as *const f32).add(o_at),
        );
        let lse0 = (lse as *const f32).add((b * heads + h) * t_len);
        with_scratch(carved_len(&lens), |scratch| {
            let [
                p,
                ds,
                d,
                kt_pack,
                vt_pack,
                k_pack,
                qa_pack,
                doa_pack,
                qb_pack,
                dob_pack,
                a_pack,
            ] = carve(scratch, lens);
            let kt = products.b(kt_pack, (k0, 1, ld_qkv), [hs, t_len]);
            let vt = products.b(vt_pack, (v0, 1, ld_qkv), [hs, t_len]);
            let k = products.b(k_pack, (k0, ld_qkv, 1), [t_len, hs]);
            let ld_t = ld as isize;
            let (p_tile, ds_tile) = ((p.as_ptr(), ld_t, 1), (ds.as_ptr(), ld_t, 1));
            let next = next_head(raw.shape, b, h).map(|(nb, nh)| {
                let at = nb * t_len * 3 * c + nh * hs;
                let (q, dq) = (
                    (qkv as *const f32).wrapping_add(at),
                    (dqkv as *const f32).wrapping_add(at),
                );
                let o_at = nb * t_len * c + nh * hs;
                let (o, d_o) = (
                    (out as *const f32).wrapping_add(o_at),
                    (dout as *const f32).wrapping_add(o_at),
                );
                let ld = 3 * c;
                [
                    (q, ld),
                    (q.wrapping_add(c), ld),
                    (q.wrapping_add(2 * c), ld),
                    (dq, ld),
                    (dq.wrapping_add(c), ld),
                    (dq.wrapping_add(2 * c), ld),
                    (o, c),
                    (d_o, c),
                ]
            });
            for qb in blocks {
                let (r0, rows) = (qb.r0, qb.rows);
                if let Some(next) = &next {
                    prefetch_rows(next, (r0, rows), hs);
                }
                let d = &mut d[..rows];
                let (q_rows, dq) = ((q0.add(r0 * 3 * c), ld_qkv, 1), dq0.add(r0 * 3 * c));
                let d_out = (do0.add(r0 * c), ld_o, 1);
                row_dots(d, d_out.0, o0.add(r0 * c), (c, hs), raw.precision);
                let lse = std::slice::from_raw_parts(lse0.add(r0), rows);
                let q_a = products.a(qa_pack, q_rows, [rows, hs]);
                let do_a = products.a(doa_pack, d_out, [rows, hs]);
                let q_b = products.b(qb_pack, q_rows, [rows, hs]);
                let do_b = products.b(dob_pack, d_out, [rows, hs]);
                for (c0, n) in qb.chunks() {
                    products.mul([rows, n, hs], p_tile, q_a, kt.columns_from(c0), false);
                    products.mul([rows, n, hs], ds_tile, do_a, vt.columns_from(c0), false);
                    let keep = (!raw.keep.is_null()).then(|| {
                        let from = raw.keep.add(r0 * t_len + c0);
                        (
                            std::slice::from_raw_parts(from, (rows - 1) * t_len + n),
                            t_len,
                        )
                    });
                    probabilities_and_gradients(p, ds, ld, (r0, c0, n), keep, scale, lse, d);
                    let (pt, dst) = ((p_tile.0, 1, ld_t), (ds_tile.0, 1, ld_t));
                    let ds_a = products.a(a_pack, ds_tile, [rows, n]);
                    products.mul([rows, hs, n], (dq, ld_qkv, 1), ds_a, k.depth_from(c0), true);
                    let dst_a = products.a(a_pack, dst, [n, rows]);
                    let dk = (dk0.add(c0 * 3 * c), ld_qkv, 1);
                    products.mul([n, hs, rows], dk, dst_a, q_b, true);
                    let pt_a = products.a(a_pack, pt, [n, rows]);
                    let dv = (dv0.add(c0 * 3 * c), ld_qkv, 1);
                    products.mul([n, hs, rows], dv, pt_a, do_b, true);
                }
            }
        });
    }
}

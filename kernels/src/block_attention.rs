//! Block-sparse attention: the emitters of `attention.rs` restricted to a static list
//! of key blocks per query block, so a sparse pattern costs O(T·k), not O(T²).
//!
//! The math and the reference are `attention.rs`'s (with the pattern's `keep` mask):
//! a query block qb (rows r0..r0+BS) multiplies only the key blocks kb of its list,
//! one (BS × run × hs) GEMM per run of consecutive blocks into those tiles of the
//! (T,T) `att` buffer; the softmax runs over the listed tiles of each row; `att·V`
//! adds one GEMM per run. Dense causal attention is the triangle's lists (qb sees
//! 0..=qb, one run per query block), so the masked upper half is never computed.
//! Tiles outside the lists are never read or written (their bytes are not defined),
//! which is why backward, too, visits only the listed tiles:
//!
//!   `datt = dout·Vᵀ` per tile; `dpre = s·att ⊙ (datt − Σ att ⊙ datt)` over the row's
//!   tiles; per tile `dQ += dpre·K`, `dK += dpreᵀ·Q`, `dV += attᵀ·dout`.
//!
//! Lists hold kb ≤ qb, ascending, always including the diagonal block.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::attention::{AttentionShape, for_each_head, head_pointers, masked_softmax_segments};
use crate::jit::Emitter;
use crate::matmul::call_gemm;

/// A pattern's block lists: `lists[qb]` are the key blocks of query block qb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLists {
    pub block: usize,
    pub lists: Vec<Vec<usize>>,
}

/// Pointer to element `index` of `base`.
fn at(e: &mut Emitter<'_>, base: Value, index: usize) -> Value {
    let i = e.int(index as i64);
    e.element(base, i)
}

impl BlockLists {
    /// (start, length) of each run of consecutive key blocks of `list`: one GEMM per
    /// run and product (the causal triangle's row of tiles is a single run), and the
    /// row segments a softmax covers.
    fn runs(&self, t_len: usize, list: &[usize]) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &kb in list {
            let (start, len) = self.rows(t_len, kb);
            match runs.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => runs.push((start, len)),
            }
        }
        runs
    }

    /// The causal triangle in `block`-sized tiles: query block qb sees 0..=qb.
    pub fn causal(t_len: usize, block: usize) -> BlockLists {
        BlockLists {
            block,
            lists: (0..t_len.div_ceil(block))
                .map(|qb| (0..=qb).collect())
                .collect(),
        }
    }

    /// Dense attention: one T×T tile.
    pub fn whole(t_len: usize) -> BlockLists {
        BlockLists {
            block: t_len,
            lists: vec![vec![0]],
        }
    }

    fn rows(&self, t_len: usize, qb: usize) -> (usize, usize) {
        let start = qb * self.block;
        (start, self.block.min(t_len - start))
    }
}

/// Block-sparse attention forward (see the module doc).
pub fn emit_block_attention_forward(
    e: &mut Emitter<'_>,
    out: Value,
    att: Value,
    qkv: Value,
    keep: Option<Value>,
    shape: AttentionShape,
    blocks: &BlockLists,
) {
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = (1.0 / (hs as f64).sqrt()) as f32;
    for_each_head(e, shape, |e, b, h| {
        let p = head_pointers(e, qkv, att, shape, b, h);
        let o = crate::attention::bt_head(e, out, shape, b, p.zero, h);
        for (qb, list) in blocks.lists.iter().enumerate() {
            let (r0, rows) = blocks.rows(t_len, qb);
            let q = at(e, p.q, r0 * 3 * c);
            let o_rows = at(e, o, r0 * c);
            let runs = blocks.runs(t_len, list);
            for &(c0, cols) in &runs {
                let tile = at(e, p.att, r0 * t_len + c0);
                let k = at(e, p.k, c0 * 3 * c);
                call_gemm(
                    e,
                    rows,
                    cols,
                    hs,
                    (tile, t_len, 1),
                    (q, 3 * c, 1),
                    (k, 1, 3 * c),
                    false,
                );
            }
            if let (None, true, [(0, width)]) = (keep, e.native_gemm(), &runs[..]) {
                // The causal triangle's row of tiles, unmasked: the native softmax,
                // at the CPU's full width.
                let first = at(e, p.att, r0 * t_len);
                let args = [t_len, r0, rows, *width].map(|x| e.int(x as i64));
                let s = e.b.ins().f32const(scale);
                e.call(
                    "cllm_causal_softmax",
                    &[first, args[0], args[1], args[2], args[3], s],
                );
            } else {
                e.for_n(r0 as i64, (r0 + rows) as i64, 1, |e, t| {
                    let row = e.row(p.att, t, t_len);
                    let keep_row = keep.map(|k| e.row(k, t, t_len));
                    masked_softmax_segments(e, row, keep_row, t, &runs, scale);
                });
            }
            for (i, &(c0, cols)) in runs.iter().enumerate() {
                let tile = at(e, p.att, r0 * t_len + c0);
                let v = at(e, p.v, c0 * 3 * c);
                call_gemm(
                    e,
                    rows,
                    hs,
                    cols,
                    (o_rows, c, 1),
                    (tile, t_len, 1),
                    (v, 3 * c, 1),
                    i > 0,
                );
            }
        }
    });
}

/// Block-sparse attention backward (see the module doc), with the (T,T) `workspace`
/// used on the listed tiles only.
pub fn emit_block_attention_backward(
    e: &mut Emitter<'_>,
    dqkv: Value,
    dout: Value,
    qkv: Value,
    att: Value,
    workspace: Value,
    shape: AttentionShape,
    blocks: &BlockLists,
) {
    let (t_len, c, hs) = (shape.t_len, shape.channels, shape.head_size());
    let scale = (1.0 / (hs as f64).sqrt()) as f32;
    for_each_head(e, shape, |e, b, h| {
        let p = head_pointers(e, qkv, att, shape, b, h);
        let dp = head_pointers(e, dqkv, att, shape, b, h);
        let d = crate::attention::bt_head(e, dout, shape, b, p.zero, h);
        for (qb, list) in blocks.lists.iter().enumerate() {
            let (r0, rows) = blocks.rows(t_len, qb);
            let d_rows = at(e, d, r0 * c);
            let segments = blocks.runs(t_len, list);
            for &(c0, cols) in &segments {
                let w = at(e, workspace, r0 * t_len + c0);
                let v = at(e, p.v, c0 * 3 * c);
                call_gemm(
                    e,
                    rows,
                    cols,
                    hs,
                    (w, t_len, 1),
                    (d_rows, c, 1),
                    (v, 1, 3 * c),
                    false,
                );
            }
            e.for_n(r0 as i64, (r0 + rows) as i64, 1, |e, t| {
                let a = e.row(p.att, t, t_len);
                let w = e.row(workspace, t, t_len);
                let zero = e.b.ins().f32const(0.0);
                let weighted = e.var(zero);
                for &(c0, cols) in &segments {
                    let (a0, w0) = (at(e, a, c0), at(e, w, c0));
                    let partial = e.dot(a0, w0, cols);
                    let acc = e.get(weighted);
                    let acc = e.b.ins().fadd(acc, partial);
                    e.set(weighted, acc);
                }
                let total = e.get(weighted);
                for &(c0, cols) in &segments {
                    let (a0, w0) = (at(e, a, c0), at(e, w, c0));
                    e.lanes(cols, |e, lanes, i| {
                        let av = e.load(lanes, a0, i, 0);
                        let wv = e.load(lanes, w0, i, 0);
                        let tw = e.widen(lanes, total);
                        let diff = e.b.ins().fsub(wv, tw);
                        let sc = e.constant(lanes, scale);
                        let r = e.b.ins().fmul(av, diff);
                        let r = e.b.ins().fmul(r, sc);
                        e.store(r, w0, i, 0); // att is 0 past the diagonal, so dpre is too
                    });
                }
            });
            let q_rows = at(e, p.q, r0 * 3 * c);
            let dq_rows = at(e, dp.q, r0 * 3 * c);
            for &(c0, cols) in &segments {
                let w = at(e, workspace, r0 * t_len + c0);
                let a = at(e, p.att, r0 * t_len + c0);
                let (k, dk, dv) = (
                    at(e, p.k, c0 * 3 * c),
                    at(e, dp.k, c0 * 3 * c),
                    at(e, dp.v, c0 * 3 * c),
                );
                call_gemm(
                    e,
                    rows,
                    hs,
                    cols,
                    (dq_rows, 3 * c, 1),
                    (w, t_len, 1),
                    (k, 3 * c, 1),
                    true,
                );
                call_gemm(
                    e,
                    cols,
                    hs,
                    rows,
                    (dk, 3 * c, 1),
                    (w, 1, t_len),
                    (q_rows, 3 * c, 1),
                    true,
                );
                call_gemm(
                    e,
                    cols,
                    hs,
                    rows,
                    (dv, 3 * c, 1),
                    (a, 1, t_len),
                    (d_rows, c, 1),
                    true,
                );
            }
        }
    });
}

//! The Cranelift GEMM: `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` in F32X4, for
//! `plan.gemm = jit` (portable: no native micro-kernel needed) and as the reference
//! point the native GEMM is measured against.
//!
//! Two register-blocked shapes cover every product a training step makes:
//! - rows of `rhs` contiguous (`rhs_cs = 1`): a 4×8 tile, eight F32X4 accumulators,
//!   `lhs` broadcast one element at a time (any strides);
//! - `k` contiguous in both operands (`lhs_cs = 1`, `rhs_rs = 1`, as in `x·Wᵀ`): a 2×4
//!   tile of dot products, eight F32X4 accumulators reduced across lanes at the end.
//!
//! Ragged edges (and any other stride pattern) fall back to a scalar loop.
//! `dst` rows must be contiguous (`dst_cs = 1`). The math is the reference's
//! `matmul`; the differential test checks both tiles and the edges.

use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;

use crate::jit::{Emitter, Lanes};

/// A matrix operand: base pointer, row stride and column stride in elements.
pub type Operand = (Value, usize, usize);

/// Emits `dst (+)= lhs · rhs` inline.
pub fn emit_gemm(
    e: &mut Emitter<'_>,
    m: usize,
    n: usize,
    k: usize,
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    assert_eq!(dst.2, 1, "the JIT GEMM writes rows of dst contiguously");
    let (m_main, n_main) = if rhs.2 == 1 {
        broadcast_tiles(e, m, n, k, dst, lhs, rhs, accumulate)
    } else if lhs.2 == 1 && rhs.1 == 1 {
        dot_tiles(e, m, n, k, dst, lhs, rhs, accumulate)
    } else {
        (0, 0)
    };
    scalar_block(e, (m_main, m), (0, n), k, dst, lhs, rhs, accumulate);
    scalar_block(e, (0, m_main), (n_main, n), k, dst, lhs, rhs, accumulate);
}

/// Address of element (row, col) of an operand; `row`, `col` are run-time values.
fn at(e: &mut Emitter<'_>, (base, rs, cs): Operand, row: Value, col: Value) -> Value {
    let r = e.b.ins().imul_imm_s(row, rs as i64);
    let c = e.b.ins().imul_imm_s(col, cs as i64);
    let index = e.b.ins().iadd(r, c);
    e.element(base, index)
}

/// 4×8 tiles with `rhs` rows contiguous; returns the (rows, cols) they covered.
fn broadcast_tiles(
    e: &mut Emitter<'_>,
    m: usize,
    n: usize,
    k: usize,
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) -> (usize, usize) {
    let (m_main, n_main) = (m / 4 * 4, n / 8 * 8);
    e.for_n(0, m_main as i64, 4, |e, i| {
        e.for_n(0, n_main as i64, 8, |e, j| {
            let mut acc: Vec<Variable> = Vec::with_capacity(8);
            for r in 0..4 {
                let row = e.b.ins().iadd_imm_s(i, r);
                let d = at(e, dst, row, j);
                for half in 0..2 {
                    let zero = e_zero(e);
                    let init = if accumulate {
                        e.load(Lanes::Four, d, zero, 4 * half)
                    } else {
                        e.constant(Lanes::Four, 0.0)
                    };
                    acc.push(e.var(init));
                }
            }
            e.for_n(0, k as i64, 1, |e, p| {
                let b_row = at(e, rhs, p, j);
                let zero = e_zero(e);
                let b0 = e.load(Lanes::Four, b_row, zero, 0);
                let b1 = e.load(Lanes::Four, b_row, zero, 4);
                for r in 0..4 {
                    let row = e.b.ins().iadd_imm_s(i, r);
                    let a_at = at(e, lhs, row, p);
                    let a = e.load(Lanes::One, a_at, zero, 0);
                    let a = e.widen(Lanes::Four, a);
                    for (half, b) in [b0, b1].into_iter().enumerate() {
                        let v = acc[2 * r as usize + half];
                        let sum = e.get(v);
                        let sum = e.b.ins().fma(a, b, sum);
                        e.set(v, sum);
                    }
                }
            });
            for r in 0..4 {
                let row = e.b.ins().iadd_imm_s(i, r);
                let d = at(e, dst, row, j);
                for half in 0..2 {
                    let v = e.get(acc[2 * r as usize + half]);
                    let zero = e_zero(e);
                    e.store(v, d, zero, 4 * half as i64);
                }
            }
        });
    });
    (m_main, n_main)
}

/// 2×4 tiles of dot products with `k` contiguous in both operands.
fn dot_tiles(
    e: &mut Emitter<'_>,
    m: usize,
    n: usize,
    k: usize,
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) -> (usize, usize) {
    let (m_main, n_main, k_main) = (m / 2 * 2, n / 4 * 4, k / 4 * 4);
    e.for_n(0, m_main as i64, 2, |e, i| {
        e.for_n(0, n_main as i64, 4, |e, j| {
            let zero4 = e.constant(Lanes::Four, 0.0);
            let acc: Vec<Variable> = (0..8).map(|_| e.var(zero4)).collect();
            let zero = e_zero(e);
            let a_rows: Vec<Value> = (0..2)
                .map(|r| {
                    let row = e.b.ins().iadd_imm_s(i, r);
                    at(e, lhs, row, zero)
                })
                .collect();
            let b_rows: Vec<Value> = (0..4)
                .map(|c| {
                    let col = e.b.ins().iadd_imm_s(j, c);
                    at(e, rhs, zero, col)
                })
                .collect();
            e.for_n(0, k_main as i64, 4, |e, p| {
                let a: Vec<Value> = a_rows
                    .iter()
                    .map(|&row| e.load(Lanes::Four, row, p, 0))
                    .collect();
                let b: Vec<Value> = b_rows
                    .iter()
                    .map(|&col| e.load(Lanes::Four, col, p, 0))
                    .collect();
                for r in 0..2 {
                    for c in 0..4 {
                        let v = acc[4 * r + c];
                        let sum = e.get(v);
                        let sum = e.b.ins().fma(a[r], b[c], sum);
                        e.set(v, sum);
                    }
                }
            });
            for r in 0..2 {
                let row = e.b.ins().iadd_imm_s(i, r as i64);
                for c in 0..4 {
                    let v = e.get(acc[4 * r + c]);
                    let mut total = e.sum_lanes(v);
                    // the k tail
                    let tail = e.constant(Lanes::One, 0.0);
                    let tail_var = e.var(tail);
                    e.for_n(k_main as i64, k as i64, 1, |e, p| {
                        let x = e.load(Lanes::One, a_rows[r], p, 0);
                        let y = e.load(Lanes::One, b_rows[c], p, 0);
                        let s = e.get(tail_var);
                        let s = e.b.ins().fma(x, y, s);
                        e.set(tail_var, s);
                    });
                    let t = e.get(tail_var);
                    total = e.b.ins().fadd(total, t);
                    let col = e.b.ins().iadd_imm_s(j, c as i64);
                    let d = at(e, dst, row, col);
                    let zero = e_zero(e);
                    if accumulate {
                        let old = e.load(Lanes::One, d, zero, 0);
                        total = e.b.ins().fadd(old, total);
                    }
                    e.store(total, d, zero, 0);
                }
            }
        });
    });
    (m_main, n_main)
}

/// Plain triple loop over rows `rows.0..rows.1` and columns `cols.0..cols.1`.
fn scalar_block(
    e: &mut Emitter<'_>,
    rows: (usize, usize),
    cols: (usize, usize),
    k: usize,
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    if rows.0 >= rows.1 || cols.0 >= cols.1 {
        return;
    }
    e.for_n(rows.0 as i64, rows.1 as i64, 1, |e, i| {
        e.for_n(cols.0 as i64, cols.1 as i64, 1, |e, j| {
            let zero = e.constant(Lanes::One, 0.0);
            let sum = e.var(zero);
            e.for_n(0, k as i64, 1, |e, p| {
                let (a_at, b_at) = (at(e, lhs, i, p), at(e, rhs, p, j));
                let z = e_zero(e);
                let a = e.load(Lanes::One, a_at, z, 0);
                let b = e.load(Lanes::One, b_at, z, 0);
                let s = e.get(sum);
                let s = e.b.ins().fma(a, b, s);
                e.set(sum, s);
            });
            let d = at(e, dst, i, j);
            let z = e_zero(e);
            let mut total = e.get(sum);
            if accumulate {
                let old = e.load(Lanes::One, d, z, 0);
                total = e.b.ins().fadd(old, total);
            }
            e.store(total, d, z, 0);
        });
    });
}

fn e_zero(e: &mut Emitter<'_>) -> Value {
    e.int(0)
}

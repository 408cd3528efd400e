//! Token + position embedding.
//!
//! Forward:  `out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :]`
//! Backward: `dwte[tokens[b,t], :] += dout[b,t,:]`, `dwpe[t, :] += dout[b,t,:]`
//!
//! Shapes: tokens (B,T); wte (V,C); wpe (T_max,C); out (B,T,C).

use crate::real::Real;

/// Gathers the token and position embeddings of a batch of `bt = B·T` positions.
pub fn embedding_forward<T: Real>(
    out: &mut [T],
    tokens: &[u32],
    wte: &[T],
    wpe: &[T],
    t_len: usize,
    c: usize,
) {
    for (n, &token) in tokens.iter().enumerate() {
        let t = n % t_len;
        let (token_row, pos_row) = (token as usize * c, t * c);
        let out_row = &mut out[n * c..(n + 1) * c];
        for i in 0..c {
            out_row[i] = T::from_f64(wte[token_row + i].to_f64() + wpe[pos_row + i].to_f64());
        }
    }
}

/// Scatter-adds the gradient of every position into its token's and position's rows.
pub fn embedding_backward<T: Real>(
    dwte: &mut [T],
    dwpe: &mut [T],
    dout: &[T],
    tokens: &[u32],
    t_len: usize,
    c: usize,
) {
    for (n, &token) in tokens.iter().enumerate() {
        let t = n % t_len;
        let d = &dout[n * c..(n + 1) * c];
        let token_row = &mut dwte[token as usize * c..(token as usize + 1) * c];
        for i in 0..c {
            token_row[i] = T::from_f64(token_row[i].to_f64() + d[i].to_f64());
        }
        let pos_row = &mut dwpe[t * c..(t + 1) * c];
        for i in 0..c {
            pos_row[i] = T::from_f64(pos_row[i].to_f64() + d[i].to_f64());
        }
    }
}

// ── Cranelift emitters ────────────────────────────────────────────────────────

use crate::jit::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Gathers `rows·t_len` positions: `out[n] = wte[tokens[n]] + wpe[n mod T]`.
pub fn emit_embedding_forward(
    e: &mut Emitter<'_>,
    out: Value,
    tokens: Value,
    wte: Value,
    wpe: Value,
    rows: usize,
    t_len: usize,
    c: usize,
) {
    e.for_n(0, rows as i64, 1, |e, b| {
        e.for_n(0, t_len as i64, 1, |e, t| {
            let n = e.b.ins().imul_imm_s(b, t_len as i64);
            let n = e.b.ins().iadd(n, t);
            let token = e.load_u32(tokens, n);
            let (src, pos, dst) = (e.row(wte, token, c), e.row(wpe, t, c), e.row(out, n, c));
            e.lanes(c, |e, lanes, i| {
                let x = e.load(lanes, src, i, 0);
                let y = e.load(lanes, pos, i, 0);
                let s = e.b.ins().fadd(x, y);
                e.store(s, dst, i, 0);
            });
        });
    });
}

/// Scatter-adds every position's gradient into its token's and position's rows.
pub fn emit_embedding_backward(
    e: &mut Emitter<'_>,
    dwte: Value,
    dwpe: Value,
    dout: Value,
    tokens: Value,
    rows: usize,
    t_len: usize,
    c: usize,
) {
    e.for_n(0, rows as i64, 1, |e, b| {
        e.for_n(0, t_len as i64, 1, |e, t| {
            let n = e.b.ins().imul_imm_s(b, t_len as i64);
            let n = e.b.ins().iadd(n, t);
            let token = e.load_u32(tokens, n);
            let (d, tok_row, pos_row) =
                (e.row(dout, n, c), e.row(dwte, token, c), e.row(dwpe, t, c));
            let one = e.b.ins().f32const(1.0);
            e.axpy(one, d, tok_row, c);
            e.axpy(one, d, pos_row, c);
        });
    });
}

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

use crate::rows::Shared;

/// The forward, native, at the CPU's full width: `out[n] = wte[tokens[n]] + wpe[n mod
/// T]` for `positions` positions, split over the caller's spare threads (`rows.rs`).
///
/// # Safety
/// `out` holds positions·c floats, `tokens` positions ids each below wte's rows, `wpe`
/// t_len·c floats.
pub unsafe extern "C" fn cllm_embedding(
    out: *mut f32,
    tokens: *const u32,
    wte: *const f32,
    wpe: *const f32,
    positions: i64,
    t_len: i64,
    c: i64,
) {
    let [positions, t_len, c] = [positions, t_len, c].map(|x| x as usize);
    let (out, tokens, wte, wpe) = (
        Shared(out),
        Shared::of(tokens),
        Shared::of(wte),
        Shared::of(wpe),
    );
    crate::rows::for_each_part(positions, c, |r| {
        for n in r {
            // SAFETY: the caller's contract; this part writes its own rows only.
            let (y, x, p) = unsafe {
                let token = *tokens.at(n) as usize;
                (
                    out.slice_mut(n * c..(n + 1) * c),
                    wte.slice(token * c..(token + 1) * c),
                    wpe.slice(n % t_len * c..(n % t_len + 1) * c),
                )
            };
            crate::cpu::full_width!((y: &mut [f32], x: &[f32], p: &[f32]) => {
                for ((y, x), p) in y.iter_mut().zip(x).zip(p) {
                    *y = x + p;
                }
            })
        }
    });
}

/// The backward, native: every position's gradient added into its token's and its
/// position's rows, in position order. Split over the caller's spare threads by
/// columns, not positions (two positions may share a token): each element still
/// receives its additions in position order, so the split changes no bit.
///
/// # Safety
/// `dout` holds positions·c floats, `tokens` positions ids each below dwte's rows,
/// `dwpe` t_len·c floats.
pub unsafe extern "C" fn cllm_embedding_backward(
    dwte: *mut f32,
    dwpe: *mut f32,
    dout: *const f32,
    tokens: *const u32,
    positions: i64,
    t_len: i64,
    c: i64,
) {
    let [positions, t_len, c] = [positions, t_len, c].map(|x| x as usize);
    let (dwte, dwpe, dout, tokens) = (
        Shared(dwte),
        Shared(dwpe),
        Shared::of(dout),
        Shared::of(tokens),
    );
    crate::rows::for_each_part(c, positions, |columns| {
        for n in 0..positions {
            let at = |row: usize| row * c + columns.start..row * c + columns.end;
            // SAFETY: the caller's contract; this part writes its own columns only, and
            // the token's row is not the position's (two tensors).
            let (tok, pos, d) = unsafe {
                let token = *tokens.at(n) as usize;
                (
                    dwte.slice_mut(at(token)),
                    dwpe.slice_mut(at(n % t_len)),
                    dout.slice(at(n)),
                )
            };
            crate::cpu::full_width!((tok: &mut [f32], pos: &mut [f32], d: &[f32]) => {
                for ((t, p), d) in tok.iter_mut().zip(pos.iter_mut()).zip(d) {
                    *t += d;
                    *p += d;
                }
            })
        }
    });
}

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
    if e.native() {
        let [n, t, c] = [rows * t_len, t_len, c].map(|x| e.int(x as i64));
        e.call("cllm_embedding", &[out, tokens, wte, wpe, n, t, c]);
        return;
    }
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
    if e.native() {
        let [n, t, c] = [rows * t_len, t_len, c].map(|x| e.int(x as i64));
        e.call(
            "cllm_embedding_backward",
            &[dwte, dwpe, dout, tokens, n, t, c],
        );
        return;
    }
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

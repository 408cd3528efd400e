//! LayerNorm over the channel dimension.
//!
//! Forward, per row x of C channels:
//!   `μ = mean(x)`, `σ⁻¹ = 1/sqrt(mean((x−μ)²) + eps)`, `x̂ = (x−μ)·σ⁻¹`, `y = x̂·w + b`
//! Backward, with `g = dy·w`:
//!   `dx += σ⁻¹ · (g − mean(g) − x̂·mean(g·x̂))`, `dw += Σ_rows dy·x̂`, `db += Σ_rows dy`
//!
//! Shapes: inp, out (N,C); weight, bias (C); mean, rstd (N), saved for backward.

use crate::real::{Real, add_into};

/// Normalises each of the `n` rows of `inp`; saves each row's mean and 1/std.
pub fn layernorm_forward<T: Real>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: &[T],
    c: usize,
    eps: f64,
) {
    for (row, x) in inp.chunks_exact(c).enumerate() {
        let mu = x.iter().map(|v| v.to_f64()).sum::<f64>() / c as f64;
        let var = x.iter().map(|v| (v.to_f64() - mu).powi(2)).sum::<f64>() / c as f64;
        let s = 1.0 / (var + eps).sqrt();
        let y = &mut out[row * c..(row + 1) * c];
        for i in 0..c {
            let xhat = (x[i].to_f64() - mu) * s;
            y[i] = T::from_f64(xhat * weight[i].to_f64() + bias[i].to_f64());
        }
        mean[row] = T::from_f64(mu);
        rstd[row] = T::from_f64(s);
    }
}

/// Accumulates the gradients of LayerNorm's input, weight and bias.
pub fn layernorm_backward<T: Real>(
    dinp: &mut [T],
    dweight: &mut [T],
    dbias: &mut [T],
    dout: &[T],
    inp: &[T],
    weight: &[T],
    mean: &[T],
    rstd: &[T],
    c: usize,
) {
    let mut dw = vec![0.0f64; c];
    let mut db = vec![0.0f64; c];
    let mut dx = vec![0.0f64; c];
    for (row, x) in inp.chunks_exact(c).enumerate() {
        let (mu, s) = (mean[row].to_f64(), rstd[row].to_f64());
        let dy = &dout[row * c..(row + 1) * c];
        let (mut mean_g, mut mean_gx) = (0.0, 0.0);
        for i in 0..c {
            let xhat = (x[i].to_f64() - mu) * s;
            let g = dy[i].to_f64() * weight[i].to_f64();
            mean_g += g;
            mean_gx += g * xhat;
            dw[i] += dy[i].to_f64() * xhat;
            db[i] += dy[i].to_f64();
        }
        mean_g /= c as f64;
        mean_gx /= c as f64;
        for i in 0..c {
            let xhat = (x[i].to_f64() - mu) * s;
            let g = dy[i].to_f64() * weight[i].to_f64();
            dx[i] = s * (g - mean_g - xhat * mean_gx);
        }
        add_into(&mut dinp[row * c..(row + 1) * c], &dx);
    }
    add_into(dweight, &dw);
    add_into(dbias, &db);
}

// ── Cranelift emitters ────────────────────────────────────────────────────────
// Per row: f32 four-lane partial sums (the reference sums in f64; the differential
// tests allow the difference, which grows with C).

use crate::jit::{Emitter, Lanes};
use cranelift_codegen::ir::{InstBuilder, Value};

/// Σ over `n` floats of `f(x)` for one row, as an f32.
fn row_sum(
    e: &mut Emitter<'_>,
    x: Value,
    n: usize,
    f: impl Fn(&mut Emitter<'_>, Lanes, Value) -> Value,
) -> Value {
    let zero4 = e.constant(Lanes::Four, 0.0);
    let zero1 = e.constant(Lanes::One, 0.0);
    let (acc4, acc1) = (e.var(zero4), e.var(zero1));
    e.lanes(n, |e, lanes, i| {
        let v = e.load(lanes, x, i, 0);
        let term = f(e, lanes, v);
        let var = if lanes == Lanes::Four { acc4 } else { acc1 };
        let acc = e.get(var);
        let next = e.b.ins().fadd(acc, term);
        e.set(var, next);
    });
    let v = e.get(acc4);
    let total = e.sum_lanes(v);
    let tail = e.get(acc1);
    e.b.ins().fadd(total, tail)
}

/// LayerNorm forward, native, at the CPU's full width: the JIT's operations per
/// element, with 16 independent partial sums per row for the mean and the variance
/// (the JIT's four-lane code is bound by those two serial reductions); rows split over
/// the caller's spare threads (`rows.rs`).
///
/// # Safety
/// `out`, `inp` hold rows·c floats, `mean`, `rstd` rows, `weight`, `bias` c.
pub unsafe extern "C" fn cllm_layernorm(
    out: *mut f32,
    mean: *mut f32,
    rstd: *mut f32,
    inp: *const f32,
    weight: *const f32,
    bias: *const f32,
    rows: i64,
    c: i64,
    eps: f32,
) {
    use crate::rows::Shared;
    let (rows, c) = (rows as usize, c as usize);
    let [out, mean, rstd] = [out, mean, rstd].map(Shared);
    let [inp, weight, bias] = [inp, weight, bias].map(Shared::of);
    crate::rows::for_each_part(rows, c, |r| {
        let cells = r.start * c..r.end * c;
        // SAFETY: the caller's contract; this part writes its own rows only.
        unsafe {
            layernorm_rows(
                out.slice_mut(cells.clone()),
                mean.slice_mut(r.clone()),
                rstd.slice_mut(r),
                inp.slice(cells),
                weight.slice(0..c),
                bias.slice(0..c),
                c,
                eps,
            )
        }
    });
}

/// [`cllm_layernorm`] on a range of rows.
fn layernorm_rows(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    c: usize,
    eps: f32,
) {
    crate::cpu::full_width!((out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], c: usize, eps: f32) => {
        const L: usize = 16;
        let inv_c = 1.0 / c as f32;
        let rows = inp.chunks_exact(c).zip(out.chunks_exact_mut(c));
        for (((x, y), m), r) in rows.zip(mean.iter_mut()).zip(rstd.iter_mut()) {
            // Written out, not through a helper taking a closure: everything here
            // must inline into the target-feature wrapper to be vectorised.
            let whole = c / L * L;
            let mut acc = [0.0f32; L];
            for chunk in x[..whole].chunks_exact(L) {
                for j in 0..L {
                    acc[j] += chunk[j];
                }
            }
            let tail: f32 = x[whole..].iter().sum();
            let mu = (acc.iter().sum::<f32>() + tail) * inv_c;
            let mut acc = [0.0f32; L];
            for chunk in x[..whole].chunks_exact(L) {
                for j in 0..L {
                    let d = chunk[j] - mu;
                    acc[j] += d * d;
                }
            }
            let tail: f32 = x[whole..].iter().map(|v| (v - mu) * (v - mu)).sum();
            let var = (acc.iter().sum::<f32>() + tail) * inv_c;
            let s = 1.0 / (var + eps).sqrt();
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
                *y = ((x - mu) * s).mul_add(*w, *b);
            }
            *m = mu;
            *r = s;
        }
    })
}

/// LayerNorm backward, native, at the CPU's full width: first the input gradient row
/// by row (rows split over the caller's spare threads, `rows.rs`), then the weight and
/// bias gradients column by column, each column a sum over the rows in row order
/// (columns split) — so no sum crosses a part, and the split changes no bit.
///
/// # Safety
/// `dinp`, `dout`, `inp` hold rows·c floats, `mean`, `rstd` rows, `dweight`, `dbias`,
/// `weight` c.
pub unsafe extern "C" fn cllm_layernorm_backward(
    dinp: *mut f32,
    dweight: *mut f32,
    dbias: *mut f32,
    dout: *const f32,
    inp: *const f32,
    weight: *const f32,
    mean: *const f32,
    rstd: *const f32,
    rows: i64,
    c: i64,
) {
    use crate::rows::Shared;
    let (rows, c) = (rows as usize, c as usize);
    let [dinp, dweight, dbias] = [dinp, dweight, dbias].map(Shared);
    let [dout, inp, weight, mean, rstd] = [dout, inp, weight, mean, rstd].map(Shared::of);
    crate::rows::for_each_part(rows, c, |r| {
        let cells = r.start * c..r.end * c;
        // SAFETY: the caller's contract; this part writes its own rows of dinp only.
        unsafe {
            let dx = dinp.slice_mut(cells.clone());
            let (dy, x) = (dout.slice(cells.clone()), inp.slice(cells));
            let (mu, s) = (mean.slice(r.clone()), rstd.slice(r));
            layernorm_backward_rows(dx, dy, x, weight.slice(0..c), mu, s, c)
        }
    });
    crate::rows::for_each_part(c, rows, |columns| {
        // SAFETY: the caller's contract; this part writes its own columns only.
        unsafe {
            let dw = dweight.slice_mut(columns.clone());
            let db = dbias.slice_mut(columns.clone());
            let (dy, x) = (dout.slice(0..rows * c), inp.slice(0..rows * c));
            let (mu, s) = (mean.slice(0..rows), rstd.slice(0..rows));
            layernorm_backward_columns(dw, db, dy, x, mu, s, c, columns.start)
        }
    });
}

/// `dx += σ⁻¹·(g − mean(g) − x̂·mean(g·x̂))` for a range of rows, `g = dy·w`.
fn layernorm_backward_rows(
    dinp: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) {
    crate::cpu::full_width!((dinp: &mut [f32], dout: &[f32], inp: &[f32], weight: &[f32], mean: &[f32], rstd: &[f32], c: usize) => {
        const L: usize = 16;
        let inv_c = 1.0 / c as f32;
        let whole = c / L * L;
        let rows = dinp.chunks_exact_mut(c).zip(dout.chunks_exact(c)).zip(inp.chunks_exact(c));
        for (((dx, dy), x), (mu, s)) in rows.zip(mean.iter().zip(rstd)) {
            let (mu, s) = (*mu, *s);
            let (mut sum_g, mut sum_gx) = ([0.0f32; L], [0.0f32; L]);
            for ((dy, x), w) in dy[..whole].chunks_exact(L).zip(x.chunks_exact(L)).zip(weight.chunks_exact(L)) {
                for j in 0..L {
                    let g = dy[j] * w[j];
                    sum_g[j] += g;
                    sum_gx[j] = g.mul_add((x[j] - mu) * s, sum_gx[j]);
                }
            }
            let (mut tail_g, mut tail_gx) = (0.0f32, 0.0f32);
            for i in whole..c {
                let g = dy[i] * weight[i];
                tail_g += g;
                tail_gx = g.mul_add((x[i] - mu) * s, tail_gx);
            }
            let mean_g = (sum_g.iter().sum::<f32>() + tail_g) * inv_c;
            let mean_gx = (sum_gx.iter().sum::<f32>() + tail_gx) * inv_c;
            for (((dx, dy), x), w) in dx.iter_mut().zip(dy).zip(x).zip(weight) {
                let xhat = (x - mu) * s;
                *dx = s.mul_add(dy * w - mean_g - xhat * mean_gx, *dx);
            }
        }
    })
}

/// `dw += Σ_rows dy·x̂`, `db += Σ_rows dy` for the columns from `first` on (as many as
/// `dweight` holds), each summed over the rows in row order.
fn layernorm_backward_columns(
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
    first: usize,
) {
    crate::cpu::full_width!((dweight: &mut [f32], dbias: &mut [f32], dout: &[f32], inp: &[f32], mean: &[f32], rstd: &[f32], c: usize, first: usize) => {
        let columns = first..first + dweight.len();
        let rows = dout.chunks_exact(c).zip(inp.chunks_exact(c));
        for ((dy, x), (mu, s)) in rows.zip(mean.iter().zip(rstd)) {
            let (dy, x) = (&dy[columns.clone()], &x[columns.clone()]);
            for (((dw, db), dy), x) in dweight.iter_mut().zip(dbias.iter_mut()).zip(dy).zip(x) {
                *dw = dy.mul_add((x - mu) * s, *dw);
                *db += dy;
            }
        }
    })
}

pub fn emit_layernorm_forward(
    e: &mut Emitter<'_>,
    out: Value,
    mean: Value,
    rstd: Value,
    inp: Value,
    weight: Value,
    bias: Value,
    rows: usize,
    c: usize,
    eps: f64,
) {
    if e.native() {
        let (rows, c) = (e.int(rows as i64), e.int(c as i64));
        let eps = e.b.ins().f32const(eps as f32);
        let args = [out, mean, rstd, inp, weight, bias, rows, c, eps];
        e.call("cllm_layernorm", &args);
        return;
    }
    let inv_c = 1.0 / c as f32;
    e.for_n(0, rows as i64, 1, |e, row| {
        let (x, y) = (e.row(inp, row, c), e.row(out, row, c));
        let sum = row_sum(e, x, c, |_, _, v| v);
        let scale = e.b.ins().f32const(inv_c);
        let mu = e.b.ins().fmul(sum, scale);
        let var = row_sum(e, x, c, |e, lanes, v| {
            let m = e.widen(lanes, mu);
            let d = e.b.ins().fsub(v, m);
            e.b.ins().fmul(d, d)
        });
        let var = e.b.ins().fmul(var, scale);
        let eps = e.b.ins().f32const(eps as f32);
        let var = e.b.ins().fadd(var, eps);
        let sd = e.b.ins().sqrt(var);
        let one = e.b.ins().f32const(1.0);
        let s = e.b.ins().fdiv(one, sd);
        e.lanes(c, |e, lanes, i| {
            let (m, sv) = (e.widen(lanes, mu), e.widen(lanes, s));
            let v = e.load(lanes, x, i, 0);
            let d = e.b.ins().fsub(v, m);
            let xhat = e.b.ins().fmul(d, sv);
            let w = e.load(lanes, weight, i, 0);
            let b = e.load(lanes, bias, i, 0);
            let r = e.b.ins().fma(xhat, w, b);
            e.store(r, y, i, 0);
        });
        e.store(mu, mean, row, 0);
        e.store(s, rstd, row, 0);
    });
}

pub fn emit_layernorm_backward(
    e: &mut Emitter<'_>,
    dinp: Value,
    dweight: Value,
    dbias: Value,
    dout: Value,
    inp: Value,
    weight: Value,
    mean: Value,
    rstd: Value,
    rows: usize,
    c: usize,
) {
    if e.native() {
        let (rows, c) = (e.int(rows as i64), e.int(c as i64));
        let args = [dinp, dweight, dbias, dout, inp, weight, mean, rstd, rows, c];
        e.call("cllm_layernorm_backward", &args);
        return;
    }
    let inv_c = 1.0 / c as f32;
    e.for_n(0, rows as i64, 1, |e, row| {
        let (x, dy, dx) = (e.row(inp, row, c), e.row(dout, row, c), e.row(dinp, row, c));
        let mu = e.load(Lanes::One, mean, row, 0);
        let s = e.load(Lanes::One, rstd, row, 0);
        let zero4 = e.constant(Lanes::Four, 0.0);
        let zero1 = e.constant(Lanes::One, 0.0);
        let (g4, g1, gx4, gx1) = (e.var(zero4), e.var(zero1), e.var(zero4), e.var(zero1));
        // Pass 1: mean(g), mean(g·x̂); dweight += dy·x̂; dbias += dy.
        e.lanes(c, |e, lanes, i| {
            let (m, sv) = (e.widen(lanes, mu), e.widen(lanes, s));
            let v = e.load(lanes, x, i, 0);
            let d = e.b.ins().fsub(v, m);
            let xhat = e.b.ins().fmul(d, sv);
            let dyv = e.load(lanes, dy, i, 0);
            let w = e.load(lanes, weight, i, 0);
            let g = e.b.ins().fmul(dyv, w);
            let (gv, gxv) = if lanes == Lanes::Four {
                (g4, gx4)
            } else {
                (g1, gx1)
            };
            let acc = e.get(gv);
            let acc = e.b.ins().fadd(acc, g);
            e.set(gv, acc);
            let acc = e.get(gxv);
            let acc = e.b.ins().fma(g, xhat, acc);
            e.set(gxv, acc);
            let dw = e.load(lanes, dweight, i, 0);
            let dw = e.b.ins().fma(dyv, xhat, dw);
            e.store(dw, dweight, i, 0);
            let db = e.load(lanes, dbias, i, 0);
            let db = e.b.ins().fadd(db, dyv);
            e.store(db, dbias, i, 0);
        });
        let scale = e.b.ins().f32const(inv_c);
        let reduce = |e: &mut Emitter<'_>, four, one| {
            let v = e.get(four);
            let v = e.sum_lanes(v);
            let t = e.get(one);
            let total = e.b.ins().fadd(v, t);
            e.b.ins().fmul(total, scale)
        };
        let mean_g = reduce(e, g4, g1);
        let mean_gx = reduce(e, gx4, gx1);
        // Pass 2: dx += σ⁻¹·(g − mean(g) − x̂·mean(g·x̂)).
        e.lanes(c, |e, lanes, i| {
            let (m, sv) = (e.widen(lanes, mu), e.widen(lanes, s));
            let (mg, mgx) = (e.widen(lanes, mean_g), e.widen(lanes, mean_gx));
            let v = e.load(lanes, x, i, 0);
            let d = e.b.ins().fsub(v, m);
            let xhat = e.b.ins().fmul(d, sv);
            let dyv = e.load(lanes, dy, i, 0);
            let w = e.load(lanes, weight, i, 0);
            let g = e.b.ins().fmul(dyv, w);
            let t = e.b.ins().fsub(g, mg);
            let xm = e.b.ins().fmul(xhat, mgx);
            let t = e.b.ins().fsub(t, xm);
            let old = e.load(lanes, dx, i, 0);
            let r = e.b.ins().fma(sv, t, old);
            e.store(r, dx, i, 0);
        });
    });
}

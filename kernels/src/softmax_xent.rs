//! Softmax + cross-entropy over the vocabulary, and its gradient, fused.
//!
//! Forward, per position n with target y (positions whose target is [`IGNORE`] do not
//! count): `p = softmax(logits_n)`, `loss_n = −ln p[y]`.
//! The step's loss is `scale · Σ_n loss_n`, with `scale = 1 / (number of counted
//! targets in the whole step)`, so that the reported loss is exactly the one
//! differentiated, however the step is split into micro-batches.
//! Backward: `dlogits_n += scale · (p − onehot(y))` for counted positions.
//!
//! Shapes: logits, probs (N,V); targets, losses (N).

use crate::real::Real;

/// A target that is not scored (padding, or a prompt position).
pub const IGNORE: u32 = u32::MAX;

/// Writes probabilities and per-position losses; returns Σ loss over counted positions.
pub fn softmax_xent_forward<T: Real>(
    losses: &mut [T],
    probs: &mut [T],
    logits: &[T],
    targets: &[u32],
    v: usize,
) -> f64 {
    let mut total = 0.0;
    for (n, row) in logits.chunks_exact(v).enumerate() {
        let max = row
            .iter()
            .map(|x| x.to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|x| (x.to_f64() - max).exp()).sum();
        let p = &mut probs[n * v..(n + 1) * v];
        for i in 0..v {
            p[i] = T::from_f64((row[i].to_f64() - max).exp() / sum);
        }
        let target = targets[n];
        losses[n] = if target == IGNORE {
            T::default()
        } else {
            // −ln p[y], computed from the logits so it stays finite when p[y] underflows.
            let loss = max + sum.ln() - row[target as usize].to_f64();
            total += loss;
            T::from_f64(loss)
        };
    }
    total
}

/// Accumulates `scale · (p − onehot(y))` into `dlogits` for counted positions.
pub fn softmax_xent_backward<T: Real>(
    dlogits: &mut [T],
    probs: &[T],
    targets: &[u32],
    scale: f64,
    v: usize,
) {
    for (n, &target) in targets.iter().enumerate() {
        if target == IGNORE {
            continue;
        }
        let p = &probs[n * v..(n + 1) * v];
        let d = &mut dlogits[n * v..(n + 1) * v];
        for i in 0..v {
            let onehot = if i == target as usize { 1.0 } else { 0.0 };
            d[i] = T::from_f64(d[i].to_f64() + scale * (p[i].to_f64() - onehot));
        }
    }
}

// ── The native forward ────────────────────────────────────────────────────────
// The JIT's forward runs four lanes at a time with one chain of maxima and one of sums
// per row: it measured 1.5 GiB/s, the slowest pass per byte of a step. The native pass
// below is the same arithmetic at the CPU's full width: the exps 16 at a time, the
// maximum in any order (it is exact), and the sum in the JIT's order — four lane sums
// over whole groups of four, `(s0 + s1) + (s2 + s3)`, then the tail in order — so it
// gives the JIT's bits, operation for operation. JIT code calls it when native kernels
// are on (`plan.gemm = native`).

/// One row: probabilities into `p`, and the row's loss (0 when not scored).
#[inline(always)]
fn softmax_xent_row(p: &mut [f32], x: &[f32], target: u32) -> f64 {
    use crate::jit::math::exp_f32;
    const L: usize = 16;
    let mut m = [f32::NEG_INFINITY; L];
    let whole = x.len() / L * L;
    for chunk in x[..whole].chunks_exact(L) {
        for j in 0..L {
            m[j] = if chunk[j] > m[j] { chunk[j] } else { m[j] };
        }
    }
    let max = x[whole..].iter().fold(
        m.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        |a, &b| a.max(b),
    );
    for (q, v) in p.iter_mut().zip(x) {
        *q = exp_f32(v - max);
    }
    let quads = x.len() / 4 * 4;
    let mut s4 = [0.0f32; 4];
    for q in p[..quads].chunks_exact(4) {
        for j in 0..4 {
            s4[j] += q[j];
        }
    }
    let tail = p[quads..].iter().fold(0.0f32, |a, &b| a + b);
    let sum = ((s4[0] + s4[1]) + (s4[2] + s4[3])) + tail;
    let inv = 1.0 / sum;
    p.iter_mut().for_each(|q| *q *= inv);
    if target == IGNORE {
        return 0.0;
    }
    (max as f64 + (sum as f64).ln()) - x[target as usize] as f64
}

/// The forward over `rows` rows of `v` logits: probabilities, per-row losses (f32);
/// returns Σ of those losses over the rows in row order, in f64, as the JIT's forward
/// does. Rows split over the caller's spare threads (`rows.rs`); the sum runs after
/// the parts, over the stored losses, so it does not depend on the split.
///
/// # Safety
/// `losses` and `targets` hold `rows` values, `probs` and `logits` rows·v floats;
/// every scored target is below v.
pub unsafe extern "C" fn cllm_softmax_xent(
    losses: *mut f32,
    probs: *mut f32,
    logits: *const f32,
    targets: *const u32,
    rows: i64,
    v: i64,
) -> f64 {
    use crate::rows::Shared;
    let (rows, v) = (rows as usize, v as usize);
    let [losses_at, probs] = [losses, probs].map(Shared);
    let (logits, targets) = (Shared::of(logits), Shared::of(targets));
    crate::rows::for_each_part(rows, v, |r| {
        let cells = r.start * v..r.end * v;
        // SAFETY: the caller's contract; this part writes its own rows only.
        unsafe {
            softmax_xent_rows(
                losses_at.slice_mut(r.clone()),
                probs.slice_mut(cells.clone()),
                logits.slice(cells),
                targets.slice(r),
                v,
            )
        }
    });
    // SAFETY: the caller's contract; the parts have finished.
    let losses = unsafe { std::slice::from_raw_parts(losses, rows) };
    losses.iter().map(|&l| l as f64).sum()
}

/// [`cllm_softmax_xent`] on a range of rows, without the sum.
fn softmax_xent_rows(
    losses: &mut [f32],
    probs: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    v: usize,
) {
    crate::cpu::full_width!((losses: &mut [f32], probs: &mut [f32], logits: &[f32], targets: &[u32], v: usize) => {
        let rows = probs.chunks_exact_mut(v).zip(logits.chunks_exact(v));
        for (n, (p, x)) in rows.enumerate() {
            losses[n] = softmax_xent_row(p, x, targets[n]) as f32;
        }
    })
}

/// `dlogits += scale · (p − onehot(y))` for scored rows, native, at the CPU's full
/// width, rows split over the caller's spare threads: the JIT's operations (`d += s·p`
/// by fused multiply-add, then `d[y] −= s`).
///
/// # Safety
/// `targets` holds `rows` values, `dlogits` and `probs` rows·v floats; every scored
/// target is below v.
pub unsafe extern "C" fn cllm_softmax_xent_backward(
    dlogits: *mut f32,
    probs: *const f32,
    targets: *const u32,
    rows: i64,
    v: i64,
    scale: f32,
) {
    use crate::rows::Shared;
    let (rows, v) = (rows as usize, v as usize);
    let (dlogits, probs, targets) = (Shared(dlogits), Shared::of(probs), Shared::of(targets));
    crate::rows::for_each_part(rows, v, |r| {
        let cells = r.start * v..r.end * v;
        // SAFETY: the caller's contract; this part writes its own rows only.
        let (d, p, t) = unsafe {
            (
                dlogits.slice_mut(cells.clone()),
                probs.slice(cells),
                targets.slice(r),
            )
        };
        crate::cpu::full_width!((d: &mut [f32], p: &[f32], t: &[u32], v: usize, scale: f32) => {
            for ((d, p), &target) in d.chunks_exact_mut(v).zip(p.chunks_exact(v)).zip(t) {
                let (s, index) = if target == IGNORE { (0.0, 0) } else { (scale, target as usize) };
                for (d, p) in d.iter_mut().zip(p) {
                    *d = s.mul_add(*p, *d);
                }
                d[index] -= s;
            }
        })
    });
}

// ── Cranelift emitters ────────────────────────────────────────────────────────
// Branch-free on IGNORE: an ignored row reads target 0 and is weighted by 0.

use crate::jit::{Emitter, Lanes};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};

/// (is scored, index to read) of row `row`'s target.
fn target_of(e: &mut Emitter<'_>, targets: Value, row: Value) -> (Value, Value) {
    let target = e.load_u32(targets, row);
    let ignore = e.int(IGNORE as i64);
    let valid = e.b.ins().icmp(IntCC::NotEqual, target, ignore);
    let zero = e.int(0);
    let index = e.b.ins().select(valid, target, zero);
    (valid, index)
}

/// Writes probabilities and per-row losses (f32); the kernel returns Σ of the stored
/// losses in row order, in f64 (so a split of the rows cannot change it).
pub fn emit_softmax_xent_forward(
    e: &mut Emitter<'_>,
    losses: Value,
    probs: Value,
    logits: Value,
    targets: Value,
    rows: usize,
    v: usize,
) {
    if e.native() {
        let (r, n) = (e.int(rows as i64), e.int(v as i64));
        let total = e.call("cllm_softmax_xent", &[losses, probs, logits, targets, r, n]);
        e.set_result(total.expect("the native forward returns the loss sum"));
        return;
    }
    let zero = e.b.ins().f64const(0.0);
    let total = e.var(zero);
    e.for_n(0, rows as i64, 1, |e, row| {
        let (x, p) = (e.row(logits, row, v), e.row(probs, row, v));
        let neg = e.constant(Lanes::Four, f32::NEG_INFINITY);
        let neg1 = e.constant(Lanes::One, f32::NEG_INFINITY);
        let (m4, m1) = (e.var(neg), e.var(neg1));
        e.lanes(v, |e, lanes, i| {
            let val = e.load(lanes, x, i, 0);
            let var = if lanes == Lanes::Four { m4 } else { m1 };
            let m = e.get(var);
            let m = e.b.ins().fmax(m, val);
            e.set(var, m);
        });
        let m = e.get(m4);
        let m = e.max_lanes(m);
        let t = e.get(m1);
        let max = e.b.ins().fmax(m, t);
        let zero4 = e.constant(Lanes::Four, 0.0);
        let zero1 = e.constant(Lanes::One, 0.0);
        let (s4, s1) = (e.var(zero4), e.var(zero1));
        e.lanes(v, |e, lanes, i| {
            let val = e.load(lanes, x, i, 0);
            let mx = e.widen(lanes, max);
            let d = e.b.ins().fsub(val, mx);
            let ex = e.exp(lanes, d);
            e.store(ex, p, i, 0);
            let var = if lanes == Lanes::Four { s4 } else { s1 };
            let acc = e.get(var);
            let acc = e.b.ins().fadd(acc, ex);
            e.set(var, acc);
        });
        let s = e.get(s4);
        let s = e.sum_lanes(s);
        let t = e.get(s1);
        let sum = e.b.ins().fadd(s, t);
        let one = e.b.ins().f32const(1.0);
        let inv = e.b.ins().fdiv(one, sum);
        e.lanes(v, |e, lanes, i| {
            let scale = e.widen(lanes, inv);
            let ex = e.load(lanes, p, i, 0);
            let r = e.b.ins().fmul(ex, scale);
            e.store(r, p, i, 0);
        });
        // loss = max + ln(Σ e^(x − max)) − x[target], in f64.
        let (valid, index) = target_of(e, targets, row);
        let sum64 = e.b.ins().fpromote(types::F64, sum);
        let ln = e.call("cllm_ln", &[sum64]).expect("ln returns a value");
        let max64 = e.b.ins().fpromote(types::F64, max);
        let picked = e.load(Lanes::One, x, index, 0);
        let picked = e.b.ins().fpromote(types::F64, picked);
        let loss = e.b.ins().fadd(max64, ln);
        let loss = e.b.ins().fsub(loss, picked);
        let zero = e.b.ins().f64const(0.0);
        let loss = e.b.ins().select(valid, loss, zero);
        let loss32 = e.b.ins().fdemote(types::F32, loss);
        e.store(loss32, losses, row, 0);
        let stored = e.b.ins().fpromote(types::F64, loss32);
        let acc = e.get(total);
        let acc = e.b.ins().fadd(acc, stored);
        e.set(total, acc);
    });
    let result = e.get(total);
    e.set_result(result);
}

/// `dlogits += scale · (p − onehot(y))` for scored rows; `scale` is run-time scalar 0.
pub fn emit_softmax_xent_backward(
    e: &mut Emitter<'_>,
    dlogits: Value,
    probs: Value,
    targets: Value,
    rows: usize,
    v: usize,
) {
    let scale64 = e.scalar(crate::jit::LOSS_SCALE);
    let scale = e.b.ins().fdemote(types::F32, scale64);
    if e.native() {
        let (r, n) = (e.int(rows as i64), e.int(v as i64));
        e.call(
            "cllm_softmax_xent_backward",
            &[dlogits, probs, targets, r, n, scale],
        );
        return;
    }
    e.for_n(0, rows as i64, 1, |e, row| {
        let (p, d) = (e.row(probs, row, v), e.row(dlogits, row, v));
        let (valid, index) = target_of(e, targets, row);
        let zero = e.b.ins().f32const(0.0);
        let s = e.b.ins().select(valid, scale, zero);
        e.axpy(s, p, d, v);
        let old = e.load(Lanes::One, d, index, 0);
        let r = e.b.ins().fsub(old, s);
        e.store(r, d, index, 0);
    });
}

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

/// Writes probabilities and per-row losses; the kernel returns Σ loss (f64).
pub fn emit_softmax_xent_forward(
    e: &mut Emitter<'_>,
    losses: Value,
    probs: Value,
    logits: Value,
    targets: Value,
    rows: usize,
    v: usize,
) {
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
        let acc = e.get(total);
        let acc = e.b.ins().fadd(acc, loss);
        e.set(total, acc);
        let loss32 = e.b.ins().fdemote(types::F32, loss);
        e.store(loss32, losses, row, 0);
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
    let scale64 = e.scalar(0);
    let scale = e.b.ins().fdemote(types::F32, scale64);
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

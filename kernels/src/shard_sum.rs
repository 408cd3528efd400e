//! The shard-gradient sum: the one place where the work of different threads meets.
//!
//! Every shard s of a step accumulates its gradient into its own buffer `g_s`. The
//! step's gradient is their sum in a fixed binary tree over shard indices, so it is
//! the same bits whichever thread computed which shard:
//!
//!   for stride = 1, 2, 4, …: `g[s] += g[s + stride]` for s = 0, 2·stride, 4·stride, … (s + stride < S)
//!
//! e.g. `((g0 + g1) + (g2 + g3)) + ((g4 + g5) + (g6 + g7))`. The result lands in
//! `g0`; the other buffers are left as they were. The kernel also returns Σ g0² of
//! the summed chunk, so the global gradient norm (for clipping) costs no extra pass.
//! A step runs it on fixed chunks of the parameter buffer in parallel and adds the
//! chunks' Σ g² in chunk order.
//!
//! Shapes: S buffers of one chunk (N) each.

use crate::real::Real;

/// Sums `shards[1..]` into `shards[0]` element by element in the fixed tree; returns
/// Σ of the squared sums (f64, in element order).
pub fn shard_grad_sum<T: Real>(shards: &mut [&mut [T]]) -> f64 {
    let n = shards.first().map_or(0, |g| g.len());
    let mut values = vec![0.0f64; shards.len()];
    let mut squares = 0.0;
    for i in 0..n {
        for (v, g) in values.iter_mut().zip(shards.iter()) {
            *v = g[i].to_f64();
        }
        tree_sum(&mut values, |a, b| T::from_f64(a + b).to_f64());
        let sum = T::from_f64(values[0]);
        shards[0][i] = sum;
        squares += sum.to_f64() * sum.to_f64();
    }
    squares
}

/// The fixed tree over `values` (each addition through `add`); the result is in `values[0]`.
fn tree_sum<V: Copy>(values: &mut [V], mut add: impl FnMut(V, V) -> V) {
    let mut stride = 1;
    while stride < values.len() {
        let mut s = 0;
        while s + stride < values.len() {
            values[s] = add(values[s], values[s + stride]);
            s += 2 * stride;
        }
        stride *= 2;
    }
}

// ── Cranelift emitters ────────────────────────────────────────────────────────

use crate::jit::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value, types};

/// `shards[0] = tree sum of shards[..]` over `len` floats, returning Σ of the squared
/// sums: f32 four-lane partial squares per block of 4096 floats, each block added to
/// an f64 total in order.
pub fn emit_shard_grad_sum(e: &mut Emitter<'_>, shards: &[Value], len: usize) {
    const BLOCK: usize = 4096;
    let zero = e.b.ins().f64const(0.0);
    let total = e.var(zero);
    let block = |e: &mut Emitter<'_>, start: Value, n: usize| {
        let base: Vec<Value> = shards.iter().map(|&g| e.element(g, start)).collect();
        let zero4 = e.constant(crate::jit::Lanes::Four, 0.0);
        let zero1 = e.constant(crate::jit::Lanes::One, 0.0);
        let (acc4, acc1) = (e.var(zero4), e.var(zero1));
        e.lanes(n, |e, lanes, i| {
            let mut values: Vec<Value> = base.iter().map(|&g| e.load(lanes, g, i, 0)).collect();
            tree_sum(&mut values, |a, b| e.b.ins().fadd(a, b));
            e.store(values[0], base[0], i, 0);
            let var = if lanes == crate::jit::Lanes::Four {
                acc4
            } else {
                acc1
            };
            let acc = e.get(var);
            let next = e.b.ins().fma(values[0], values[0], acc);
            e.set(var, next);
        });
        let v = e.get(acc4);
        let vector_sum = e.sum_lanes(v);
        let tail = e.get(acc1);
        let partial = e.b.ins().fadd(vector_sum, tail);
        let partial = e.b.ins().fpromote(types::F64, partial);
        let acc = e.get(total);
        let acc = e.b.ins().fadd(acc, partial);
        e.set(total, acc);
    };
    let blocks = len / BLOCK;
    e.for_n(0, (blocks * BLOCK) as i64, BLOCK as i64, |e, start| {
        block(e, start, BLOCK)
    });
    if len > blocks * BLOCK {
        let start = e.int((blocks * BLOCK) as i64);
        block(e, start, len - blocks * BLOCK);
    }
    let result = e.get(total);
    e.set_result(result);
}

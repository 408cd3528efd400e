//! Matrix multiply with an optional bias: the linear layers and the output head.
//!
//! Forward:  `out[n,o] = Σ_c inp[n,c]·weight[o,c] + bias[o]`
//! Backward: `dinp[n,c] += Σ_o dout[n,o]·weight[o,c]`,
//!           `dweight[o,c] += Σ_n dout[n,o]·inp[n,c]`, `dbias[o] += Σ_n dout[n,o]`
//!
//! Shapes: inp (N,C); weight (OC,C) — one row per output channel, as in llm.c (GPT-2
//! checkpoints store the transpose and are transposed on load); bias (OC); out (N,OC).

use crate::real::{Real, add_into, dot};

/// `out = inp · weightᵀ + bias`.
pub fn matmul_forward<T: Real>(
    out: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    c: usize,
    oc: usize,
) {
    for (x, y) in inp.chunks_exact(c).zip(out.chunks_exact_mut(oc)) {
        for (o, w) in weight.chunks_exact(c).enumerate() {
            let b = bias.map_or(0.0, |b| b[o].to_f64());
            y[o] = T::from_f64(dot(x, w) + b);
        }
    }
}

/// Accumulates the gradients of the input, the weight and (if any) the bias.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward<T: Real>(
    dinp: &mut [T],
    dweight: &mut [T],
    dbias: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    weight: &[T],
    c: usize,
    oc: usize,
) {
    let n = inp.len() / c;
    let mut acc = vec![0.0f64; c];
    // dinp: each row is a combination of the weight's rows.
    for row in 0..n {
        acc.fill(0.0);
        for (o, w) in weight.chunks_exact(c).enumerate() {
            let d = dout[row * oc + o].to_f64();
            for i in 0..c {
                acc[i] += d * w[i].to_f64();
            }
        }
        add_into(&mut dinp[row * c..(row + 1) * c], &acc);
    }
    // dweight: each row o is a combination of the input's rows.
    for o in 0..oc {
        acc.fill(0.0);
        for row in 0..n {
            let d = dout[row * oc + o].to_f64();
            let x = &inp[row * c..(row + 1) * c];
            for i in 0..c {
                acc[i] += d * x[i].to_f64();
            }
        }
        add_into(&mut dweight[o * c..(o + 1) * c], &acc);
    }
    if let Some(dbias) = dbias {
        let mut sums = vec![0.0f64; oc];
        for d in dout.chunks_exact(oc) {
            for o in 0..oc {
                sums[o] += d[o].to_f64();
            }
        }
        add_into(dbias, &sums);
    }
}

// ── The native GEMM and the Cranelift emitters ───────────────────────────────
// The multiply itself is native code at the CPU's full width (`packed_gemm`'s AVX-512
// or AVX2 micro-kernels, chosen at run time; the `gemm` crate on other CPUs), since
// Cranelift has 128-bit vectors only; JIT code does the epilogues (bias, bias + GELU)
// and the bias-gradient reduction around it. Transposes are strides, never copies.

use crate::jit::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value};

thread_local! {
    /// Threads one native GEMM call may use (set per worker by the runtime).
    static GEMM_THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// Lets GEMMs called from this thread split their output over `threads` rayon threads
/// (of the pool the caller runs in). Used when there are fewer shards than threads.
/// Threads take disjoint columns of the output (the `gemm` crate fallback: rows and
/// columns), never a split of the reduction over k, so every element is summed in the
/// same order on any thread count (tested).
pub fn set_gemm_threads(threads: usize) {
    GEMM_THREADS.with(|t| t.set(threads.max(1)));
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, every operand given by base pointer and
/// (row, column) strides in elements; `accumulate ≠ 0` adds to `dst`.
///
/// # Safety
/// The pointers and strides must describe valid, non-overlapping (for `dst`) f32
/// matrices; the JIT only calls it with tensors of the plan.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cllm_sgemm(
    m: i64,
    n: i64,
    k: i64,
    dst: *mut f32,
    dst_rs: i64,
    dst_cs: i64,
    lhs: *const f32,
    lhs_rs: i64,
    lhs_cs: i64,
    rhs: *const f32,
    rhs_rs: i64,
    rhs_cs: i64,
    accumulate: i64,
) {
    let threads = GEMM_THREADS.with(|t| t.get());
    let (m, n, k) = (m as usize, n as usize, k as usize);
    #[cfg(target_arch = "x86_64")]
    if crate::packed_gemm::available() {
        use crate::packed_gemm::{View, gemm, tile_columns};
        let isa = crate::cpu::isa();
        let view = |ptr: *const f32, rs: i64, cs: i64| View {
            ptr,
            rs: rs as isize,
            cs: cs as isize,
        };
        let (d, l, r) = (
            view(dst, dst_rs, dst_cs),
            view(lhs, lhs_rs, lhs_cs),
            view(rhs, rhs_rs, rhs_cs),
        );
        // Disjoint column ranges, a multiple of the micro-tile wide, one per thread.
        let tile = tile_columns(isa);
        let width = n.div_ceil(threads.max(1)).next_multiple_of(tile).max(tile);
        let parts = n.div_ceil(width);
        let part = |t: usize| {
            let cols = t * width..n.min((t + 1) * width);
            // SAFETY: forwarded from the caller's contract; the parts write
            // disjoint columns of dst; `available` checked the CPU.
            unsafe { gemm(isa, m, k, cols, d, l, r, accumulate != 0) }
        };
        if parts <= 1 {
            part(0);
        } else {
            use rayon::prelude::*;
            (0..parts).into_par_iter().for_each(part);
        }
        return;
    }
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate != 0,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            match threads {
                1 => gemm::Parallelism::None,
                threads => gemm::Parallelism::Rayon(threads),
            },
        )
    }
}

/// Emits a call of `cllm_sgemm`; each matrix is (pointer, row stride, column stride).
pub(crate) fn call_gemm(
    e: &mut Emitter<'_>,
    m: usize,
    n: usize,
    k: usize,
    dst: (Value, usize, usize),
    lhs: (Value, usize, usize),
    rhs: (Value, usize, usize),
    accumulate: bool,
) {
    if !e.native_gemm() {
        crate::gemm::emit_gemm(e, m, n, k, dst, lhs, rhs, accumulate);
        return;
    }
    let mut args = vec![e.int(m as i64), e.int(n as i64), e.int(k as i64)];
    for (p, rs, cs) in [dst, lhs, rhs] {
        let (rs, cs) = (e.int(rs as i64), e.int(cs as i64));
        args.extend([p, rs, cs]);
    }
    args.push(e.int(accumulate as i64));
    e.call("cllm_sgemm", &args);
}

/// `out = inp · weightᵀ (+ bias)`, then optionally `gelu_out = gelu(out)` in the same
/// pass over the output (the fused epilogue).
#[allow(clippy::too_many_arguments)]
pub fn emit_matmul_forward(
    e: &mut Emitter<'_>,
    out: Value,
    inp: Value,
    weight: Value,
    bias: Option<Value>,
    gelu_out: Option<Value>,
    n: usize,
    c: usize,
    oc: usize,
) {
    call_gemm(
        e,
        n,
        oc,
        c,
        (out, oc, 1),
        (inp, c, 1),
        (weight, 1, c),
        false,
    );
    if bias.is_none() && gelu_out.is_none() {
        return;
    }
    e.for_n(0, n as i64, 1, |e, row| {
        let y = e.row(out, row, oc);
        let g = gelu_out.map(|g| e.row(g, row, oc));
        e.lanes(oc, |e, lanes, i| {
            let mut v = e.load(lanes, y, i, 0);
            if let Some(b) = bias {
                let bv = e.load(lanes, b, i, 0);
                v = e.b.ins().fadd(v, bv);
                e.store(v, y, i, 0);
            }
            if let Some(g) = g {
                let r = crate::gelu::emit_gelu_value(e, lanes, v);
                e.store(r, g, i, 0);
            }
        });
    });
}

/// `dinp += dout · weight`, `dweight += doutᵀ · inp`, `dbias += Σ_rows dout`.
#[allow(clippy::too_many_arguments)]
pub fn emit_matmul_backward(
    e: &mut Emitter<'_>,
    dinp: Value,
    dweight: Value,
    dbias: Option<Value>,
    dout: Value,
    inp: Value,
    weight: Value,
    n: usize,
    c: usize,
    oc: usize,
) {
    call_gemm(
        e,
        n,
        c,
        oc,
        (dinp, c, 1),
        (dout, oc, 1),
        (weight, c, 1),
        true,
    );
    call_gemm(
        e,
        oc,
        c,
        n,
        (dweight, c, 1),
        (dout, 1, oc),
        (inp, c, 1),
        true,
    );
    if let Some(db) = dbias {
        e.for_n(0, n as i64, 1, |e, row| {
            let d = e.row(dout, row, oc);
            e.lanes(oc, |e, lanes, i| {
                let x = e.load(lanes, db, i, 0);
                let y = e.load(lanes, d, i, 0);
                let s = e.b.ins().fadd(x, y);
                e.store(s, db, i, 0);
            });
        });
    }
}

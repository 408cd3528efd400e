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
        bias_backward(dbias, dout, oc);
    }
}

/// `dbias[o] += Σ_rows dout[row, o]`.
pub fn bias_backward<T: Real>(dbias: &mut [T], dout: &[T], oc: usize) {
    let mut sums = vec![0.0f64; oc];
    for d in dout.chunks_exact(oc) {
        for o in 0..oc {
            sums[o] += d[o].to_f64();
        }
    }
    add_into(dbias, &sums);
}

// ── The Cranelift emitters ───────────────────────────────────────────────────
// The multiply itself is a call of the native GEMM (`gemm::sgemm`: full vector width, the
// bias and GELU epilogues fused into its tiles); with `plan.gemm = jit` it is the
// Cranelift GEMM (`gemm/cranelift.rs`) and the epilogues are a JIT pass over the output. The
// bias gradient is a JIT loop, or with native kernels the same sums at full width
// (`cllm_bias_backward`, below). Transposes are strides, never copies.

use crate::bf16::Precision;
use crate::jit::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Whether a product adds to its destination or overwrites it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accumulate {
    No,
    Yes,
    /// Overwrites in a shard's first pass of a step ([`Emitter::first_pass`]), adds in
    /// any other.
    AfterFirstPass,
}

/// Zeroes the contiguous `rows × cols` matrix `dst` when this is a shard's first pass
/// (the Cranelift GEMM only adds; the native one stores instead).
fn zero_in_first_pass(
    e: &mut Emitter<'_>,
    (dst, rs, cs): (Value, usize, usize),
    [rows, cols]: [usize; 2],
) {
    assert!(
        cs == 1 && rs == cols,
        "a weight gradient is one contiguous matrix"
    );
    let first = e.first_pass();
    zero_where(e, dst, rows * cols, Some(first));
}

/// Zeroes the `n` floats at `dst`, when `condition` (a Cranelift boolean) holds if
/// one is given.
fn zero_where(e: &mut Emitter<'_>, dst: Value, n: usize, condition: Option<Value>) {
    let (vectors, all, none) = (e.int((n / 4 * 4) as i64), e.int(n as i64), e.int(0));
    // The loops run to their bound when the condition holds and not at all otherwise.
    let (mut end_vectors, mut end_all) = (vectors, all);
    if let Some(c) = condition {
        end_vectors = e.b.ins().select(c, vectors, none);
        end_all = e.b.ins().select(c, all, vectors);
    }
    let zero = e.b.ins().f32const(0.0);
    let zeros = e.b.ins().splat(crate::jit::Lanes::Four.ty(), zero);
    e.for_range(none, end_vectors, 4, |e, i| e.store(zeros, dst, i, 0));
    e.for_range(vectors, end_all, 1, |e, i| e.store(zero, dst, i, 0));
}

/// Emits a call of `cllm_sgemm`; each matrix is (pointer, row stride, column stride).
/// A bf16 product always calls the native GEMM (Cranelift's 128-bit GEMM is fp32 only).
pub(crate) fn call_gemm(
    e: &mut Emitter<'_>,
    precision: Precision,
    [m, n, k]: [usize; 3],
    dst: (Value, usize, usize),
    lhs: (Value, usize, usize),
    rhs: (Value, usize, usize),
    panels: Option<Value>,
    accumulate: Accumulate,
) {
    if !native_gemm(e, precision) {
        assert!(panels.is_none(), "the Cranelift GEMM reads no panels");
        if accumulate == Accumulate::AfterFirstPass {
            zero_in_first_pass(e, dst, [m, n]);
        }
        let add = accumulate != Accumulate::No;
        crate::gemm::cranelift::emit_gemm(e, m, n, k, dst, lhs, rhs, add);
        return;
    }
    let mut args = vec![e.int(m as i64), e.int(n as i64), e.int(k as i64)];
    for (p, rs, cs) in [dst, lhs, rhs] {
        let (rs, cs) = (e.int(rs as i64), e.int(cs as i64));
        args.extend([p, rs, cs]);
    }
    args.push(match accumulate {
        Accumulate::No => e.int(0),
        Accumulate::Yes => e.int(1),
        Accumulate::AfterFirstPass => {
            let first = e.first_pass();
            let (zero, one) = (e.int(0), e.int(1));
            e.b.ins().select(first, zero, one)
        }
    });
    args.push(e.int(precision.code()));
    args.push(panels.unwrap_or_else(|| e.int(0)));
    e.call("cllm_sgemm", &args);
}

/// `forward` = the panels of weightᵀ (k = c, n = oc), `backward` = of weight (k = oc,
/// n = c): the weight (oc, c) rounded to bf16 once for every product that reads it
/// (`gemm::sgemm::cllm_bf16_weight_panels`, which writes nothing when the CPU's bf16 unit
/// reads no panels).
pub fn emit_weight_panels(
    e: &mut Emitter<'_>,
    [forward, backward]: [Value; 2],
    weight: Value,
    c: usize,
    oc: usize,
) {
    let (c, oc) = (e.int(c as i64), e.int(oc as i64));
    e.call(
        "cllm_bf16_weight_panels",
        &[forward, backward, weight, c, oc],
    );
}

/// Whether a product in `precision` calls the native GEMM.
fn native_gemm(e: &Emitter<'_>, precision: Precision) -> bool {
    e.native() || precision == Precision::Bf16
}

/// `out = inp · weightᵀ (+ bias)`, then optionally `gelu_out = gelu(out)`: with the
/// native GEMM both are its fused epilogue (applied to each tile while it is in L1);
/// with the Cranelift GEMM, one JIT pass over the output.
pub fn emit_matmul_forward(
    e: &mut Emitter<'_>,
    precision: Precision,
    out: Value,
    inp: Value,
    weight: Value,
    (bias, gelu_out, panels): (Option<Value>, Option<Value>, Option<Value>),
    n: usize,
    c: usize,
    oc: usize,
) {
    if native_gemm(e, precision) && (bias.is_some() || gelu_out.is_some()) {
        let null = e.int(0);
        let mut args = vec![e.int(n as i64), e.int(oc as i64), e.int(c as i64)];
        let (oc_, c_, one) = (e.int(oc as i64), e.int(c as i64), e.int(1));
        args.extend([out, oc_, inp, c_, one, weight, one, c_]);
        args.extend([bias.unwrap_or(null), gelu_out.unwrap_or(null)]);
        args.push(e.int(precision.code()));
        args.push(panels.unwrap_or(null));
        e.call("cllm_sgemm_bias_gelu", &args);
        return;
    }
    call_gemm(
        e,
        precision,
        [n, oc, c],
        (out, oc, 1),
        (inp, c, 1),
        (weight, 1, c),
        panels,
        Accumulate::No,
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

/// `dinp += dout · weight`, `dweight += doutᵀ · inp`, `dbias += Σ_rows dout`; with
/// `gelu = (dpre, pre)`, then `dpre += dinp ⊙ gelu'(pre)`: with the native GEMM in the
/// epilogue of dinp's product (each tile while it is in L1), else a pass after it.
/// With `stores_dinp`, `dinp = dout · weight` (and `dpre = dinp ⊙ gelu'(pre) + 0`:
/// both are first written here); with `stores_dweight`, `dweight = doutᵀ · inp` in a
/// shard's first pass of a step.
pub fn emit_matmul_backward(
    e: &mut Emitter<'_>,
    precision: Precision,
    [dinp, dweight]: [Value; 2],
    dbias: Option<Value>,
    [dout, inp, weight]: [Value; 3],
    gelu: Option<(Value, Value)>,
    panels: Option<Value>,
    [n, c, oc]: [usize; 3],
    [stores_dinp, stores_dweight]: [bool; 2],
) {
    let dinp_accumulates = !stores_dinp;
    match gelu {
        Some((dpre, pre)) if native_gemm(e, precision) => {
            let mut args = vec![e.int(n as i64), e.int(c as i64), e.int(oc as i64)];
            let (oc_, c_, one) = (e.int(oc as i64), e.int(c as i64), e.int(1));
            args.extend([dinp, c_, dout, oc_, one, weight, c_, one, pre, dpre]);
            args.push(e.int(dinp_accumulates as i64));
            args.push(e.int(precision.code()));
            args.push(panels.unwrap_or_else(|| e.int(0)));
            e.call("cllm_sgemm_gelu_backward", &args);
        }
        _ => {
            call_gemm(
                e,
                precision,
                [n, c, oc],
                (dinp, c, 1),
                (dout, oc, 1),
                (weight, c, 1),
                panels,
                match dinp_accumulates {
                    true => Accumulate::Yes,
                    false => Accumulate::No,
                },
            );
            if let Some((dpre, pre)) = gelu {
                if stores_dinp {
                    zero_where(e, dpre, n * c, None);
                }
                crate::gelu::emit_gelu_backward(e, dpre, dinp, pre, n * c);
            }
        }
    }
    call_gemm(
        e,
        precision,
        [oc, c, n],
        (dweight, c, 1),
        (dout, 1, oc),
        (inp, c, 1),
        None,
        match stores_dweight {
            true => Accumulate::AfterFirstPass,
            false => Accumulate::Yes,
        },
    );
    if let Some(db) = dbias {
        if e.native() {
            let (rows, oc) = (e.int(n as i64), e.int(oc as i64));
            e.call("cllm_bias_backward", &[db, dout, rows, oc]);
            return;
        }
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

// ── The native bias gradient ──────────────────────────────────────────────────
// The JIT's loop above, operation for operation (each column's rows added in order,
// one rounding each: the same bits), at the CPU's full width (`cpu::full_width!`): on
// Cranelift's four lanes it was ~1% of a bench-s bf16 step.

/// Columns of one strip: its sums stay in registers while the rows stream past.
const STRIP: usize = 128;

/// `dbias[o] += dout[row, o]` for every row in order, over `rows` rows of `oc` floats.
///
/// # Safety
/// `dbias` holds `oc` floats, `dout` `rows · oc`, and they do not overlap.
pub unsafe extern "C" fn cllm_bias_backward(dbias: *mut f32, dout: *const f32, rows: i64, oc: i64) {
    let (rows, oc) = (rows as usize, oc as usize);
    let (dbias, dout) = (crate::rows::Shared(dbias), crate::rows::Shared::of(dout));
    crate::rows::for_each_part(oc.div_ceil(STRIP), rows * STRIP, |strips| {
        let columns = strips.start * STRIP..(strips.end * STRIP).min(oc);
        // SAFETY: the caller's contract; each part writes its own columns of dbias.
        unsafe {
            let first = columns.start;
            bias_backward_columns(
                dbias.slice_mut(columns),
                dout.slice(0..rows * oc),
                oc,
                first,
            )
        }
    });
}

/// [`cllm_bias_backward`] on the columns from `first` on that `dbias` holds.
fn bias_backward_columns(dbias: &mut [f32], dout: &[f32], oc: usize, first: usize) {
    crate::cpu::full_width!((dbias: &mut [f32], dout: &[f32], oc: usize, first: usize) => {
        for (s, strip) in dbias.chunks_mut(STRIP).enumerate() {
            let c0 = first + s * STRIP;
            if let Ok(strip) = <&mut [f32; STRIP]>::try_from(&mut *strip) {
                let mut sums = *strip;
                for row in dout.chunks_exact(oc) {
                    let d = <&[f32; STRIP]>::try_from(&row[c0..c0 + STRIP]).unwrap();
                    for j in 0..STRIP {
                        sums[j] += d[j];
                    }
                }
                *strip = sums;
            } else {
                for row in dout.chunks_exact(oc) {
                    for (b, d) in strip.iter_mut().zip(&row[c0..]) {
                        *b += d;
                    }
                }
            }
        }
    })
}

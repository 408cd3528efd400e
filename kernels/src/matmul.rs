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

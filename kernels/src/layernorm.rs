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
#[allow(clippy::too_many_arguments)]
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
#[allow(clippy::too_many_arguments)]
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

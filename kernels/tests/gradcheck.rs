//! Every reference backward against central finite differences, in f64.
//!
//! Each check builds the scalar `L = Σ w ⊙ forward(x)` with random weights `w` (so
//! `dout = w`), runs the backward, and compares every input gradient with
//! `(L(x + h) − L(x − h)) / 2h`, h = 1e-6. In f64 the finite difference is good to
//! ~1e-8, so the tolerance, 1e-6 relative (with an absolute floor of 1e-8), catches any
//! wrong term while allowing rounding.

use cllm_kernels::attention::{AttentionShape, attention_backward, attention_forward};
use cllm_kernels::embedding::{embedding_backward, embedding_forward};
use cllm_kernels::gelu::{gelu_backward, gelu_forward};
use cllm_kernels::layernorm::{layernorm_backward, layernorm_forward};
use cllm_kernels::matmul::{matmul_backward, matmul_forward};
use cllm_kernels::residual::{residual_backward, residual_forward};
use cllm_kernels::softmax_xent::{IGNORE, softmax_xent_backward, softmax_xent_forward};

const H: f64 = 1e-6;
const TOLERANCE: f64 = 1e-6;

/// A small deterministic generator (tests must not depend on a crate's algorithm).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Compares `analytic` with the central difference of `loss` around `x`, element by element.
fn assert_gradient(name: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) {
    let mut worst: f64 = 0.0;
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        probe[i] = x[i] + H;
        let up = loss(&probe);
        probe[i] = x[i] - H;
        let down = loss(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * H);
        let error = (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-2);
        worst = worst.max(error);
        assert!(
            error < TOLERANCE || (numeric - analytic[i]).abs() < 1e-8,
            "{name}[{i}]: analytic {} vs numeric {numeric} (relative error {error:e})",
            analytic[i]
        );
    }
    eprintln!(
        "{name}: worst relative error {worst:e} over {} elements",
        x.len()
    );
}

fn weighted(out: &[f64], w: &[f64]) -> f64 {
    out.iter().zip(w).map(|(a, b)| a * b).sum()
}

#[test]
fn matmul_gradients() {
    for (n, c, oc) in [(3, 5, 7), (4, 8, 4), (1, 3, 2)] {
        let mut rng = Lcg(n as u64 * 31 + c as u64);
        let (inp, weight, bias, w) = (
            rng.vec(n * c),
            rng.vec(oc * c),
            rng.vec(oc),
            rng.vec(n * oc),
        );
        let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
            let mut out = vec![0.0; n * oc];
            matmul_forward(&mut out, inp, weight, Some(bias), c, oc);
            weighted(&out, &w)
        };
        let (mut dinp, mut dweight, mut dbias) =
            (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
        matmul_backward(
            &mut dinp,
            &mut dweight,
            Some(&mut dbias),
            &w,
            &inp,
            &weight,
            c,
            oc,
        );
        assert_gradient("matmul.inp", &inp, &dinp, |x| forward(x, &weight, &bias));
        assert_gradient("matmul.weight", &weight, &dweight, |x| {
            forward(&inp, x, &bias)
        });
        assert_gradient("matmul.bias", &bias, &dbias, |x| forward(&inp, &weight, x));
    }
}

#[test]
fn layernorm_gradients() {
    for (n, c) in [(3, 7), (2, 16), (5, 1)] {
        let mut rng = Lcg(n as u64 * 17 + c as u64);
        let (inp, weight, bias, w) = (rng.vec(n * c), rng.vec(c), rng.vec(c), rng.vec(n * c));
        let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, inp, weight, bias, c, 1e-5);
            (weighted(&out, &w), mean, rstd)
        };
        let (_, mean, rstd) = forward(&inp, &weight, &bias);
        let (mut dinp, mut dweight, mut dbias) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        layernorm_backward(
            &mut dinp,
            &mut dweight,
            &mut dbias,
            &w,
            &inp,
            &weight,
            &mean,
            &rstd,
            c,
        );
        assert_gradient("layernorm.inp", &inp, &dinp, |x| {
            forward(x, &weight, &bias).0
        });
        assert_gradient("layernorm.weight", &weight, &dweight, |x| {
            forward(&inp, x, &bias).0
        });
        assert_gradient("layernorm.bias", &bias, &dbias, |x| {
            forward(&inp, &weight, x).0
        });
    }
}

#[test]
fn gelu_and_residual_gradients() {
    let mut rng = Lcg(5);
    let (a, b, w) = (
        rng.vec(13).iter().map(|x| 4.0 * x).collect::<Vec<_>>(),
        rng.vec(13),
        rng.vec(13),
    );
    let gelu_loss = |x: &[f64]| {
        let mut out = vec![0.0; x.len()];
        gelu_forward(&mut out, x);
        weighted(&out, &w)
    };
    let mut da = vec![0.0; 13];
    gelu_backward(&mut da, &w, &a);
    assert_gradient("gelu.inp", &a, &da, gelu_loss);

    let residual_loss = |x: &[f64], y: &[f64]| {
        let mut out = vec![0.0; x.len()];
        residual_forward(&mut out, x, y);
        weighted(&out, &w)
    };
    let (mut da, mut db) = (vec![0.0; 13], vec![0.0; 13]);
    residual_backward(&mut da, &mut db, &w);
    assert_gradient("residual.a", &a, &da, |x| residual_loss(x, &b));
    assert_gradient("residual.b", &b, &db, |y| residual_loss(&a, y));
}

#[test]
fn attention_gradients() {
    for (batch, t_len, channels, heads) in [(2, 5, 6, 2), (1, 7, 4, 1), (1, 3, 9, 3)] {
        let shape = AttentionShape {
            batch,
            t_len,
            channels,
            heads,
        };
        let mut rng = Lcg(batch as u64 * 7 + t_len as u64);
        let qkv = rng.vec(batch * t_len * 3 * channels);
        let w = rng.vec(batch * t_len * channels);
        let lse_len = batch * heads * t_len;
        // Dense, and a sparse pattern: every other earlier key dropped (not the diagonal).
        let sparse: Vec<f64> = (0..t_len * t_len)
            .map(|i| ((i % t_len == i / t_len) || (i * 7 % 3 != 0)) as u8 as f64)
            .collect();
        for keep in [None, Some(sparse.as_slice())] {
            let forward = |qkv: &[f64]| {
                let (mut out, mut lse) = (vec![0.0; w.len()], vec![0.0; lse_len]);
                attention_forward(&mut out, &mut lse, qkv, keep, shape);
                (weighted(&out, &w), out)
            };
            if let Some(keep) = keep {
                // A dropped key has no influence on its query's output.
                let t = t_len - 1;
                let (_, before) = forward(&qkv);
                for t2 in (0..t).filter(|&t2| keep[t * t_len + t2] == 0.0) {
                    let mut moved = qkv.clone();
                    let at = (t2 * 3 + 1) * channels; // k and v of (b 0, t2)
                    moved[at..at + 2 * channels]
                        .iter_mut()
                        .for_each(|x| *x += 1.5);
                    let (_, after) = forward(&moved);
                    let row = t * channels..(t + 1) * channels;
                    assert_eq!(
                        before[row.clone()],
                        after[row],
                        "key {t2} was dropped for {t}"
                    );
                }
            }
            let mut dqkv = vec![0.0; qkv.len()];
            attention_backward(&mut dqkv, &w, &qkv, keep, shape);
            assert_gradient("attention.qkv", &qkv, &dqkv, |x| forward(x).0);
        }
    }
}

#[test]
fn attention_is_causal() {
    let shape = AttentionShape {
        batch: 1,
        t_len: 6,
        channels: 4,
        heads: 2,
    };
    let mut rng = Lcg(9);
    let mut qkv = rng.vec(6 * 12);
    let run = |qkv: &[f64]| {
        let (mut out, mut lse) = (vec![0.0; 24], vec![0.0; 2 * 6]);
        attention_forward(&mut out, &mut lse, qkv, None, shape);
        out
    };
    let before = run(&qkv);
    // Changing the last position's k and v must not change any earlier output.
    for x in &mut qkv[5 * 12 + 4..6 * 12] {
        *x += 1.0;
    }
    let after = run(&qkv);
    assert_eq!(before[..5 * 4], after[..5 * 4]);
    assert_ne!(before[5 * 4..], after[5 * 4..]);
}

#[test]
fn softmax_xent_gradients() {
    let (n, v) = (5, 11);
    let mut rng = Lcg(3);
    let logits: Vec<f64> = rng.vec(n * v).iter().map(|x| 3.0 * x).collect();
    let targets = [3, IGNORE, 0, 10, 7];
    let scale = 1.0 / 4.0;
    let loss = |logits: &[f64]| {
        let (mut losses, mut probs) = (vec![0.0; n], vec![0.0; n * v]);
        scale * softmax_xent_forward(&mut losses, &mut probs, logits, &targets, v)
    };
    let (mut losses, mut probs) = (vec![0.0; n], vec![0.0; n * v]);
    softmax_xent_forward(&mut losses, &mut probs, &logits, &targets, v);
    let mut dlogits = vec![0.0; n * v];
    softmax_xent_backward(&mut dlogits, &probs, &targets, scale, v);
    assert_gradient("softmax_xent.logits", &logits, &dlogits, loss);
    assert!(
        dlogits[v..2 * v].iter().all(|&d| d == 0.0),
        "ignored targets get no gradient"
    );
}

#[test]
fn embedding_gradients() {
    let (t_len, c, vocab) = (3, 4, 5);
    let tokens = [1u32, 4, 1, 0, 2, 1];
    let mut rng = Lcg(11);
    let (wte, wpe, w) = (
        rng.vec(vocab * c),
        rng.vec(t_len * c),
        rng.vec(tokens.len() * c),
    );
    let forward = |wte: &[f64], wpe: &[f64]| {
        let mut out = vec![0.0; tokens.len() * c];
        embedding_forward(&mut out, &tokens, wte, wpe, t_len, c);
        weighted(&out, &w)
    };
    let (mut dwte, mut dwpe) = (vec![0.0; wte.len()], vec![0.0; wpe.len()]);
    embedding_backward(&mut dwte, &mut dwpe, &w, &tokens, t_len, c);
    assert_gradient("embedding.wte", &wte, &dwte, |x| forward(x, &wpe));
    assert_gradient("embedding.wpe", &wpe, &dwpe, |x| forward(&wte, x));
}

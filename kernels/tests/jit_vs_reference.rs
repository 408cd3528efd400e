//! Every JIT kernel against its reference, on random inputs and shapes — ragged ones
//! included (sizes that are not multiples of 4, 8 or any tile) — with Cranelift's
//! verifier on. The JIT sums in f32 (four-lane partial sums) where the reference sums
//! in f64, so the tolerance grows with the reduction length K:
//! `|jit − ref| ≤ rtol(K)·max(|ref|, rms(ref))`, `rtol(K) = 1e-6·(4 + K/8)` (the rms
//! floor keeps results that cancel to near zero from demanding more than f32 has).
//! Each test prints its worst relative error.

use cllm_kernels::adamw::{AdamWStep, adamw_update, emit_adamw};
use cllm_kernels::embedding::*;
use cllm_kernels::gelu::*;
use cllm_kernels::jit::{exp_max_relative_error, tanh_max_abs_error};
use cllm_kernels::layernorm::*;
use cllm_kernels::matmul::*;
use cllm_kernels::residual::*;
use cllm_kernels::softmax_xent::*;

mod common;
use common::*;

#[test]
fn exp_and_tanh_polynomials_meet_their_stated_bounds_over_the_whole_range() {
    let mut xs: Vec<f32> = Vec::new();
    let mut x = -87.0f32;
    while x <= 88.0 {
        xs.push(x);
        x += 1.0 / 1024.0;
    }
    let n = xs.len();
    let compiled = compile(2, |e, a| {
        e.lanes(n, |e, lanes, i| {
            let v = e.load(lanes, a[0], i, 0);
            let r = e.exp(lanes, v);
            e.store(r, a[1], i, 0);
        });
    });
    let mut out = vec![0.0f32; n];
    call(&compiled, &mut [ptr(&mut xs), ptr(&mut out)], &[]);
    let worst = xs
        .iter()
        .zip(&out)
        .map(|(x, y)| (*y as f64 / (*x as f64).exp() - 1.0).abs())
        .fold(0.0, f64::max);
    eprintln!("exp: worst relative error {worst:.2e} over {n} points in [-87, 88]");
    assert!(worst <= exp_max_relative_error(), "exp error {worst:e}");

    let mut ts: Vec<f32> = (0..200_001).map(|i| -100.0 + i as f32 * 1e-3).collect();
    ts.extend([f32::MAX, -f32::MAX, 1e-30, -1e-30, 0.0]);
    let n = ts.len();
    let compiled = compile(2, |e, a| {
        e.lanes(n, |e, lanes, i| {
            let v = e.load(lanes, a[0], i, 0);
            let r = e.tanh(lanes, v);
            e.store(r, a[1], i, 0);
        });
    });
    let mut out = vec![0.0f32; n];
    call(&compiled, &mut [ptr(&mut ts), ptr(&mut out)], &[]);
    let worst = ts
        .iter()
        .zip(&out)
        .map(|(x, y)| (*y as f64 - (*x as f64).tanh()).abs())
        .fold(0.0, f64::max);
    eprintln!("tanh: worst absolute error {worst:.2e} over {n} points");
    assert!(worst <= tanh_max_abs_error(), "tanh error {worst:e}");
}

#[test]
fn elementwise_kernels_match() {
    for n in [1, 7, 64, 1001] {
        let mut rng = Lcg(n as u64);
        let (mut a, mut b, mut dout) = (rng.vec(n, 4.0), rng.vec(n, 1.0), rng.vec(n, 1.0));
        let compiled = compile(3, |e, p| emit_gelu_forward(e, p[0], p[1], n));
        let (mut jit, mut reference) = (vec![0.0; n], vec![0.0; n]);
        call(
            &compiled,
            &mut [ptr(&mut jit), ptr(&mut a), ptr(&mut b)],
            &[],
        );
        gelu_forward(&mut reference, &a);
        assert_close("gelu_forward", &jit, &reference, 1);

        let compiled = compile(3, |e, p| emit_gelu_backward(e, p[0], p[1], p[2], n));
        let (mut jit, mut reference) = (b.clone(), b.clone());
        call(
            &compiled,
            &mut [ptr(&mut jit), ptr(&mut dout), ptr(&mut a)],
            &[],
        );
        gelu_backward(&mut reference, &dout, &a);
        assert_close("gelu_backward", &jit, &reference, 1);

        let compiled = compile(3, |e, p| emit_residual_forward(e, p[0], p[1], p[2], n));
        let (mut jit, mut reference) = (vec![0.0; n], vec![0.0; n]);
        call(
            &compiled,
            &mut [ptr(&mut jit), ptr(&mut a), ptr(&mut b)],
            &[],
        );
        residual_forward(&mut reference, &a, &b);
        assert_eq!(jit, reference, "residual_forward is exact");

        let compiled = compile(3, |e, p| emit_residual_backward(e, p[0], p[1], p[2], n));
        let (mut ja, mut jb, mut ra, mut rb) = (a.clone(), b.clone(), a.clone(), b.clone());
        call(
            &compiled,
            &mut [ptr(&mut ja), ptr(&mut jb), ptr(&mut dout)],
            &[],
        );
        residual_backward(&mut ra, &mut rb, &dout);
        assert_eq!((ja, jb), (ra, rb), "residual_backward is exact");
    }
}

#[test]
fn matmul_kernels_match() {
    with_both_gemms(matmul_kernels_match_once);
}

fn matmul_kernels_match_once() {
    for (n, c, oc) in [(5, 7, 3), (16, 32, 48), (13, 37, 29), (64, 128, 384)] {
        let mut rng = Lcg((n * c * oc) as u64);
        let (mut inp, mut weight, mut bias) =
            (rng.vec(n * c, 1.0), rng.vec(oc * c, 1.0), rng.vec(oc, 1.0));
        for gelu in [false, true] {
            let compiled = compile(5, |e, p| {
                emit_matmul_forward(
                    e,
                    p[0],
                    p[1],
                    p[2],
                    Some(p[3]),
                    gelu.then_some(p[4]),
                    n,
                    c,
                    oc,
                )
            });
            let (mut out, mut g) = (vec![0.0; n * oc], vec![0.0; n * oc]);
            call(
                &compiled,
                &mut [
                    ptr(&mut out),
                    ptr(&mut inp),
                    ptr(&mut weight),
                    ptr(&mut bias),
                    ptr(&mut g),
                ],
                &[],
            );
            let mut reference = vec![0.0; n * oc];
            matmul_forward(&mut reference, &inp, &weight, Some(&bias), c, oc);
            assert_close("matmul_forward", &out, &reference, c);
            if gelu {
                let mut reference_g = vec![0.0; n * oc];
                gelu_forward(&mut reference_g, &reference);
                assert_close("matmul_bias_gelu epilogue", &g, &reference_g, c);
            }
        }
        let mut dout = rng.vec(n * oc, 1.0);
        let (dinp0, dweight0, dbias0) =
            (rng.vec(n * c, 1.0), rng.vec(oc * c, 1.0), rng.vec(oc, 1.0));
        let compiled = compile(6, |e, p| {
            emit_matmul_backward(e, p[0], p[1], Some(p[2]), p[3], p[4], p[5], n, c, oc)
        });
        let (mut dinp, mut dweight, mut dbias) = (dinp0.clone(), dweight0.clone(), dbias0.clone());
        call(
            &compiled,
            &mut [
                ptr(&mut dinp),
                ptr(&mut dweight),
                ptr(&mut dbias),
                ptr(&mut dout),
                ptr(&mut inp),
                ptr(&mut weight),
            ],
            &[],
        );
        let (mut rdinp, mut rdweight, mut rdbias) = (dinp0, dweight0, dbias0);
        matmul_backward(
            &mut rdinp,
            &mut rdweight,
            Some(&mut rdbias),
            &dout,
            &inp,
            &weight,
            c,
            oc,
        );
        assert_close("matmul_backward.dinp", &dinp, &rdinp, oc);
        assert_close("matmul_backward.dweight", &dweight, &rdweight, n);
        assert_close("matmul_backward.dbias", &dbias, &rdbias, n);
    }
}

#[test]
fn layernorm_kernels_match() {
    for (rows, c) in [(3, 7), (5, 64), (2, 129), (8, 384)] {
        let mut rng = Lcg((rows * c) as u64);
        let (mut inp, mut weight, mut bias) =
            (rng.vec(rows * c, 2.0), rng.vec(c, 1.0), rng.vec(c, 1.0));
        let compiled = compile(6, |e, p| {
            emit_layernorm_forward(e, p[0], p[1], p[2], p[3], p[4], p[5], rows, c, 1e-5)
        });
        let (mut out, mut mean, mut rstd) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
        call(
            &compiled,
            &mut [
                ptr(&mut out),
                ptr(&mut mean),
                ptr(&mut rstd),
                ptr(&mut inp),
                ptr(&mut weight),
                ptr(&mut bias),
            ],
            &[],
        );
        let (mut r_out, mut r_mean, mut r_rstd) =
            (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
        layernorm_forward(
            &mut r_out,
            &mut r_mean,
            &mut r_rstd,
            &inp,
            &weight,
            &bias,
            c,
            1e-5,
        );
        assert_close("layernorm_forward", &out, &r_out, c);
        assert_close("layernorm_forward.mean", &mean, &r_mean, c);
        assert_close("layernorm_forward.rstd", &rstd, &r_rstd, c);

        let mut dout = rng.vec(rows * c, 1.0);
        let (dinp0, dw0, db0) = (rng.vec(rows * c, 1.0), rng.vec(c, 1.0), rng.vec(c, 1.0));
        let compiled = compile(8, |e, p| {
            emit_layernorm_backward(e, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], rows, c)
        });
        let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), db0.clone());
        call(
            &compiled,
            &mut [
                ptr(&mut dinp),
                ptr(&mut dw),
                ptr(&mut db),
                ptr(&mut dout),
                ptr(&mut inp),
                ptr(&mut weight),
                ptr(&mut r_mean),
                ptr(&mut r_rstd),
            ],
            &[],
        );
        let (mut rdinp, mut rdw, mut rdb) = (dinp0, dw0, db0);
        layernorm_backward(
            &mut rdinp, &mut rdw, &mut rdb, &dout, &inp, &weight, &r_mean, &r_rstd, c,
        );
        assert_close("layernorm_backward.dinp", &dinp, &rdinp, c);
        assert_close("layernorm_backward.dweight", &dw, &rdw, rows);
        assert_close("layernorm_backward.dbias", &db, &rdb, rows);
    }
}

#[test]
fn softmax_xent_kernels_match() {
    for (rows, v) in [(4, 11), (3, 256), (5, 257)] {
        let mut rng = Lcg((rows * v) as u64);
        let mut logits = rng.vec(rows * v, 5.0);
        let mut targets: Vec<u32> = (0..rows).map(|r| ((r * 7919) % v) as u32).collect();
        targets[1] = IGNORE;
        let compiled = compile(4, |e, p| {
            emit_softmax_xent_forward(e, p[0], p[1], p[2], p[3], rows, v)
        });
        let (mut losses, mut probs) = (vec![0.0; rows], vec![0.0; rows * v]);
        let total = call(
            &compiled,
            &mut [
                ptr(&mut losses),
                ptr(&mut probs),
                ptr(&mut logits),
                ptr(&mut targets),
            ],
            &[],
        );
        let (mut r_losses, mut r_probs) = (vec![0.0; rows], vec![0.0; rows * v]);
        let r_total = softmax_xent_forward(&mut r_losses, &mut r_probs, &logits, &targets, v);
        assert_close("softmax_xent.probs", &probs, &r_probs, v);
        assert_close("softmax_xent.losses", &losses, &r_losses, v);
        assert!(
            (total - r_total).abs() <= 1e-5 * r_total.abs(),
            "loss sum {total} vs {r_total}"
        );

        let d0 = rng.vec(rows * v, 1.0);
        let compiled = compile(3, |e, p| {
            emit_softmax_xent_backward(e, p[0], p[1], p[2], rows, v)
        });
        let mut d = d0.clone();
        call(
            &compiled,
            &mut [ptr(&mut d), ptr(&mut r_probs), ptr(&mut targets)],
            &[0.25],
        );
        let mut r_d = d0;
        softmax_xent_backward(&mut r_d, &r_probs, &targets, 0.25, v);
        assert_close("softmax_xent_backward", &d, &r_d, 1);
    }
}

#[test]
fn embedding_kernels_match() {
    for (batch, t_len, c, vocab) in [(2, 3, 5, 7), (1, 4, 16, 256), (3, 9, 33, 50)] {
        let mut rng = Lcg((batch * t_len * c) as u64);
        let mut tokens: Vec<u32> = (0..batch * t_len)
            .map(|i| ((i * 31 + 3) % vocab) as u32)
            .collect();
        tokens[0] = tokens[batch * t_len - 1]; // a repeated token: scatter-add must add both
        let (mut wte, mut wpe) = (rng.vec(vocab * c, 1.0), rng.vec(t_len * c, 1.0));
        let compiled = compile(4, |e, p| {
            emit_embedding_forward(e, p[0], p[1], p[2], p[3], batch, t_len, c)
        });
        let mut out = vec![0.0; batch * t_len * c];
        call(
            &compiled,
            &mut [
                ptr(&mut out),
                ptr(&mut tokens),
                ptr(&mut wte),
                ptr(&mut wpe),
            ],
            &[],
        );
        let mut r_out = vec![0.0; out.len()];
        embedding_forward(&mut r_out, &tokens, &wte, &wpe, t_len, c);
        assert_eq!(out, r_out, "embedding_forward is exact");

        let mut dout = rng.vec(out.len(), 1.0);
        let (dwte0, dwpe0) = (rng.vec(wte.len(), 1.0), rng.vec(wpe.len(), 1.0));
        let compiled = compile(4, |e, p| {
            emit_embedding_backward(e, p[0], p[1], p[2], p[3], batch, t_len, c)
        });
        let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
        call(
            &compiled,
            &mut [
                ptr(&mut dwte),
                ptr(&mut dwpe),
                ptr(&mut dout),
                ptr(&mut tokens),
            ],
            &[],
        );
        let (mut r_dwte, mut r_dwpe) = (dwte0, dwpe0);
        embedding_backward(&mut r_dwte, &mut r_dwpe, &dout, &tokens, t_len, c);
        assert_close("embedding_backward.dwte", &dwte, &r_dwte, batch);
        assert_close("embedding_backward.dwpe", &dwpe, &r_dwpe, batch);
    }
}

#[test]
fn adamw_matches() {
    let segments = [(0, 7, true), (7, 13, false), (20, 64, true)];
    let total = 84;
    let mut rng = Lcg(77);
    let (p0, mut g, m0, v0) = (
        rng.vec(total, 1.0),
        rng.vec(total, 1.0),
        rng.vec(total, 0.1),
        rng.vec(total, 0.1)
            .iter()
            .map(|x| x.abs())
            .collect::<Vec<f32>>(),
    );
    let step = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        t: 3,
        grad_scale: 0.5,
    };
    let compiled = compile(4, |e, p| emit_adamw(e, p[0], p[1], p[2], p[3], &segments));
    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
    call(
        &compiled,
        &mut [ptr(&mut p), ptr(&mut g), ptr(&mut m), ptr(&mut v)],
        step.scalars().as_array(),
    );
    let (mut rp, mut rm, mut rv) = (p0, m0, v0);
    for &(offset, len, decayed) in &segments {
        let s = AdamWStep {
            weight_decay: if decayed { step.weight_decay } else { 0.0 },
            ..step
        };
        let r = offset..offset + len;
        adamw_update(
            &mut rp[r.clone()],
            &g[r.clone()],
            &mut rm[r.clone()],
            &mut rv[r],
            &s,
        );
    }
    assert_close("adamw.params", &p, &rp, 1);
    assert_close("adamw.m", &m, &rm, 1);
    assert_close("adamw.v", &v, &rv, 1);
}

#[test]
fn cranelift_gemm_matches_on_every_stride_pattern() {
    use cllm_kernels::gemm::cranelift::emit_gemm;
    NATIVE_GEMM.with(|n| n.set(false));
    // (m, n, k): full tiles, ragged edges, and smaller than one tile.
    for (m, n, k) in [(8, 16, 12), (13, 19, 7), (3, 5, 2), (33, 65, 31)] {
        let mut rng = Lcg((m * n * k) as u64);
        let (a, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
        let mut expected = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                expected[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum::<f64>() as f32;
            }
        }
        // lhs row-major or transposed; rhs row-major (broadcast tiles), transposed (dot tiles).
        let mut a_t = vec![0.0f32; m * k];
        for i in 0..m {
            for p in 0..k {
                a_t[p * m + i] = a[i * k + p];
            }
        }
        let mut b_t = vec![0.0f32; k * n];
        for p in 0..k {
            for j in 0..n {
                b_t[j * k + p] = b[p * n + j];
            }
        }
        let cases = [
            ("NN", false, false),
            ("TN", true, false),
            ("NT", false, true),
            ("TT", true, true),
        ];
        for (name, lhs_t, rhs_t) in cases {
            for accumulate in [false, true] {
                let lhs_strides = if lhs_t { (1, m) } else { (k, 1) };
                let rhs_strides = if rhs_t { (1, k) } else { (n, 1) };
                let compiled = compile(3, |e, p| {
                    emit_gemm(
                        e,
                        m,
                        n,
                        k,
                        (p[0], n, 1),
                        (p[1], lhs_strides.0, lhs_strides.1),
                        (p[2], rhs_strides.0, rhs_strides.1),
                        accumulate,
                    )
                });
                let start = rng.vec(m * n, 1.0);
                let mut dst = start.clone();
                let (mut lhs, mut rhs) = (
                    if lhs_t { a_t.clone() } else { a.clone() },
                    if rhs_t { b_t.clone() } else { b.clone() },
                );
                call(
                    &compiled,
                    &mut [ptr(&mut dst), ptr(&mut lhs), ptr(&mut rhs)],
                    &[],
                );
                let want: Vec<f32> = expected
                    .iter()
                    .zip(&start)
                    .map(|(x, s)| if accumulate { x + s } else { *x })
                    .collect();
                assert_close(
                    &format!("gemm {name} {m}x{n}x{k} acc={accumulate}"),
                    &dst,
                    &want,
                    k,
                );
            }
        }
    }
    NATIVE_GEMM.with(|n| n.set(true));
}

//! LayerNorm: the JIT kernels against the reference on ragged shapes, and the
//! reference backward against finite differences.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::layernorm::*;

/// Native (split over threads when there are spare ones) and Cranelift code alike.
#[test]
fn layernorm_kernels_match() {
    with_both_gemms(layernorm_kernels_match_once);
}

fn layernorm_kernels_match_once() {
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
        assert_kernel_matches("layernorm_forward", &out, &r_out, c);
        assert_kernel_matches("layernorm_forward.mean", &mean, &r_mean, c);
        assert_kernel_matches("layernorm_forward.rstd", &rstd, &r_rstd, c);

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
        assert_kernel_matches("layernorm_backward.dinp", &dinp, &rdinp, c);
        assert_kernel_matches("layernorm_backward.dweight", &dw, &rdw, rows);
        assert_kernel_matches("layernorm_backward.dbias", &db, &rdb, rows);
    }
}

#[test]
fn layernorm_gradients() {
    for (n, c) in [(3, 7), (2, 16), (5, 1)] {
        let mut rng = Lcg(n as u64 * 17 + c as u64);
        let (inp, weight, bias, w) = (
            rng.vec_f64(n * c),
            rng.vec_f64(c),
            rng.vec_f64(c),
            rng.vec_f64(n * c),
        );
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

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(2, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let (rows, c) = (pick(rng, 1, 37), pick(rng, 1, 70));
        let step = Step::LayerNorm {
            rows,
            c,
            eps: 1e-5,
            out: rows * c,
            mean: rows,
            rstd: rows,
            inp: rows * c,
            weight: c,
            bias: c,
        };
        assert_step_matches(&name("layernorm"), step, 1, &none, c, rng);
        let step = Step::LayerNormBackward {
            rows,
            c,
            dinp: rows * c,
            dweight: c,
            dbias: c,
            dout: rows * c,
            inp: rows * c,
            weight: c,
            mean: rows,
            rstd: rows,
        };
        assert_step_matches(
            &name("layernorm_backward"),
            step,
            1,
            &none,
            rows.max(c),
            rng,
        );
    });
}

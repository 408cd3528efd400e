//! The residual add: the JIT kernels against the reference (exactly: one addition),
//! and the reference backward against finite differences.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::residual::*;

/// Native (split over threads when there are spare ones) and Cranelift code alike.
#[test]
fn residual_kernels_match() {
    with_both_gemms(residual_kernels_match_once);
}

fn residual_kernels_match_once() {
    for n in [1, 7, 64, 1001] {
        let mut rng = Lcg(n as u64);
        let (mut a, mut b, mut dout) = (rng.vec(n, 4.0), rng.vec(n, 1.0), rng.vec(n, 1.0));
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
fn residual_gradients() {
    let mut rng = Lcg(5);
    let (a, b, w) = (
        rng.vec_f64(13).iter().map(|x| 4.0 * x).collect::<Vec<_>>(),
        rng.vec_f64(13),
        rng.vec_f64(13),
    );
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

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(4, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let n = pick(rng, 1, 3000);
        let step = Step::Residual {
            n,
            out: n,
            a: n,
            b: n,
        };
        assert_step_matches(&name("residual"), step, 1, &none, 1, rng);
        let step = Step::ResidualBackward {
            n,
            da: n,
            db: n,
            dout: n,
        };
        assert_step_matches(&name("residual_backward"), step, 1, &none, 1, rng);
    });
}

//! GELU: the JIT kernels against the reference on ragged lengths, and the reference
//! backward against finite differences.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::gelu::*;

/// Native (split over threads when there are spare ones) and Cranelift code alike.
#[test]
fn gelu_kernels_match() {
    with_both_gemms(gelu_kernels_match_once);
}

fn gelu_kernels_match_once() {
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
        assert_kernel_matches("gelu_forward", &jit, &reference, 1);

        let compiled = compile(3, |e, p| emit_gelu_backward(e, p[0], p[1], p[2], n));
        let (mut jit, mut reference) = (b.clone(), b.clone());
        call(
            &compiled,
            &mut [ptr(&mut jit), ptr(&mut dout), ptr(&mut a)],
            &[],
        );
        gelu_backward(&mut reference, &dout, &a);
        assert_kernel_matches("gelu_backward", &jit, &reference, 1);
    }
}

#[test]
fn gelu_gradients() {
    let mut rng = Lcg(5);
    let (a, _b, w) = (
        rng.vec_f64(13).iter().map(|x| 4.0 * x).collect::<Vec<_>>(),
        rng.vec_f64(13),
        rng.vec_f64(13),
    );
    let gelu_loss = |x: &[f64]| {
        let mut out = vec![0.0; x.len()];
        gelu_forward(&mut out, x);
        weighted(&out, &w)
    };
    let mut da = vec![0.0; 13];
    gelu_backward(&mut da, &w, &a);
    assert_gradient("gelu.inp", &a, &da, gelu_loss);
}

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(3, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let n = pick(rng, 1, 3000);
        let step = Step::Gelu { n, out: n, inp: n };
        assert_step_matches(&name("gelu"), step, 1, &none, 1, rng);
        let step = Step::GeluBackward {
            n,
            dinp: n,
            dout: n,
            inp: n,
        };
        assert_step_matches(&name("gelu_backward"), step, 1, &none, 1, rng);
    });
}

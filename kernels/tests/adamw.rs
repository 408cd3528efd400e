//! AdamW: the JIT kernel against the reference update.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::adamw::{AdamWStep, adamw_update, emit_adamw};

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
    assert_kernel_matches("adamw.params", &p, &rp, 1);
    assert_kernel_matches("adamw.m", &m, &rm, 1);
    assert_kernel_matches("adamw.v", &v, &rv, 1);
}

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(9, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let _ = none;
        let len = pick(rng, 1, 5000);
        let h = cllm_kernels::adamw::AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            t: round as u64 + 1,
            grad_scale: 0.5,
        };
        let adamw = Scalars {
            adamw: Some(h),
            ..Scalars::default()
        };
        let step = Step::AdamW {
            segments: vec![(0, len / 2, true), (len / 2, len - len / 2, false)],
            params: len,
            grads: len,
            m: len,
            v: len,
        };
        assert_step_matches(&name("adamw"), step, 1, &adamw, 1, rng);
    });
}

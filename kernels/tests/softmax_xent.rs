//! Softmax + cross-entropy: the JIT kernels against the reference on ragged shapes,
//! and the reference backward against finite differences.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::softmax_xent::*;

/// Native (split over threads when there are spare ones) and Cranelift code alike.
#[test]
fn softmax_xent_kernels_match() {
    with_both_gemms(softmax_xent_kernels_match_once);
}

fn softmax_xent_kernels_match_once() {
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
        assert_kernel_matches("softmax_xent.probs", &probs, &r_probs, v);
        assert_kernel_matches("softmax_xent.losses", &losses, &r_losses, v);
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
        assert_kernel_matches("softmax_xent_backward", &d, &r_d, 1);
    }
}

#[test]
fn softmax_xent_gradients() {
    let (n, v) = (5, 11);
    let mut rng = Lcg(3);
    let logits: Vec<f64> = rng.vec_f64(n * v).iter().map(|x| 3.0 * x).collect();
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

/// The native full-width forward (`plan.gemm = native`) sums in the four-lane JIT's
/// order, so both give the same bits: probabilities, losses and the loss sum.
#[test]
fn native_forward_gives_the_jit_bits() {
    for (rows, v) in [(3, 11), (4, 256), (2, 259), (2, 1000)] {
        let mut rng = Lcg((rows * v) as u64 + 3);
        let mut logits = rng.vec(rows * v, 8.0);
        let mut targets: Vec<u32> = (0..rows).map(|r| ((r * 31) % v) as u32).collect();
        targets[0] = IGNORE;
        let run = |native: bool, logits: &mut Vec<f32>, targets: &mut Vec<u32>| {
            NATIVE_GEMM.with(|n| n.set(native));
            let compiled = compile(4, |e, p| {
                emit_softmax_xent_forward(e, p[0], p[1], p[2], p[3], rows, v)
            });
            let (mut losses, mut probs) = (vec![0.0f32; rows], vec![0.0f32; rows * v]);
            let total = call(
                &compiled,
                &mut [ptr(&mut losses), ptr(&mut probs), ptr(logits), ptr(targets)],
                &[],
            );
            NATIVE_GEMM.with(|n| n.set(true));
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits(&losses), bits(&probs), total.to_bits())
        };
        let native = run(true, &mut logits, &mut targets);
        let jit = run(false, &mut logits, &mut targets);
        assert!(native == jit, "rows {rows}, v {v}: native and JIT differ");
    }
}

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(6, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let (rows, vocab) = (pick(rng, 1, 37), pick(rng, 2, 300));
        let step = Step::SoftmaxXent {
            rows,
            v: vocab,
            losses: rows,
            probs: rows * vocab,
            logits: rows * vocab,
            targets: rows,
        };
        assert_step_matches(&name("softmax_xent"), step, vocab as u32, &none, vocab, rng);
        let scaled = Scalars {
            loss_scale: 1.0 / rows as f64,
            ..Scalars::default()
        };
        let step = Step::SoftmaxXentBackward {
            rows,
            v: vocab,
            dlogits: rows * vocab,
            probs: rows * vocab,
            targets: rows,
        };
        let ids = vocab as u32;
        assert_step_matches(&name("softmax_xent_backward"), step, ids, &scaled, 1, rng);
    });
}

//! The token + position embedding: the JIT kernels against the reference, and the
//! reference backward against finite differences.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::embedding::*;

/// Native (split over threads when there are spare ones) and Cranelift code alike.
#[test]
fn embedding_kernels_match() {
    with_both_gemms(embedding_kernels_match_once);
}

fn embedding_kernels_match_once() {
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
        assert_kernel_matches("embedding_backward.dwte", &dwte, &r_dwte, batch);
        assert_kernel_matches("embedding_backward.dwpe", &dwpe, &r_dwpe, batch);
    }
}

#[test]
fn embedding_gradients() {
    let (t_len, c, vocab) = (3, 4, 5);
    let tokens = [1u32, 4, 1, 0, 2, 1];
    let mut rng = Lcg(11);
    let (wte, wpe, w) = (
        rng.vec_f64(vocab * c),
        rng.vec_f64(t_len * c),
        rng.vec_f64(tokens.len() * c),
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

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(5, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let (batch, t, c) = (pick(rng, 1, 3), pick(rng, 1, 20), pick(rng, 1, 70));
        let vocab = pick(rng, 2, 40);
        let step = Step::Embedding {
            batch,
            t,
            c,
            out: batch * t * c,
            tokens: batch * t,
            wte: vocab * c,
            wpe: t * c,
        };
        assert_step_matches(&name("embedding"), step, vocab as u32, &none, 1, rng);
        let step = Step::EmbeddingBackward {
            batch,
            t,
            c,
            dwte: vocab * c,
            dwpe: t * c,
            dout: batch * t * c,
            tokens: batch * t,
        };
        let reduction = batch * t;
        assert_step_matches(
            &name("embedding_backward"),
            step,
            vocab as u32,
            &none,
            reduction,
            rng,
        );
    });
}

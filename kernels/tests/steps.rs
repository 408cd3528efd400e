//! Every step of the kernel IR through both back ends, by the one generic check
//! (`common::assert_step_matches`): the JIT's `emit_step` and the reference's
//! `run_step` take each step apart by slot name, and this runs their dispatch on
//! random ragged shapes, with both GEMMs. (Attention's backward reads the forward's
//! saved output; its checks are in `attention.rs` and `tests/flash_patterns.rs`.)

mod common;
use common::*;

use cllm_kernels::adamw::AdamWStep;
use cllm_kernels::attention::{AttentionShape, BlockLists};
use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

/// A length in `lo..=hi` from the test's stream.
fn pick(rng: &mut Lcg, lo: usize, hi: usize) -> usize {
    lo + ((rng.next().abs() * (hi - lo + 1) as f32) as usize).min(hi - lo)
}

#[test]
fn every_step_matches_the_reference_on_ragged_shapes() {
    with_both_gemms(|| {
        let mut rng = Lcg(2026);
        for round in 0..3 {
            let rows = pick(&mut rng, 1, 37);
            let (c, oc) = (pick(&mut rng, 1, 70), pick(&mut rng, 1, 50));
            let none = Scalars::default();
            let name = |kind: &str| format!("{kind}#{round}");
            for bias in [false, true] {
                for gelu in [false, true] {
                    let step = Step::Matmul {
                        rows,
                        c,
                        oc,
                        out: rows * oc,
                        inp: rows * c,
                        weight: oc * c,
                        bias: bias.then_some(oc),
                        gelu_out: gelu.then_some(rows * oc),
                    };
                    assert_step_matches(&name("matmul"), step, 1, &none, c, &mut rng);
                    let step = Step::MatmulBackward {
                        rows,
                        c,
                        oc,
                        dinp: rows * c,
                        dweight: oc * c,
                        dbias: bias.then_some(oc),
                        dout: rows * oc,
                        inp: rows * c,
                        weight: oc * c,
                        dpre: gelu.then_some(rows * c),
                        pre: gelu.then_some(rows * c),
                    };
                    let reduction = rows.max(oc);
                    assert_step_matches(
                        &name("matmul_backward"),
                        step,
                        1,
                        &none,
                        reduction,
                        &mut rng,
                    );
                }
            }
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
            assert_step_matches(&name("layernorm"), step, 1, &none, c, &mut rng);
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
                &mut rng,
            );
            let n = rows * c;
            let step = Step::Gelu { n, out: n, inp: n };
            assert_step_matches(&name("gelu"), step, 1, &none, 1, &mut rng);
            let step = Step::GeluBackward {
                n,
                dinp: n,
                dout: n,
                inp: n,
            };
            assert_step_matches(&name("gelu_backward"), step, 1, &none, 1, &mut rng);
            let step = Step::Residual {
                n,
                out: n,
                a: n,
                b: n,
            };
            assert_step_matches(&name("residual"), step, 1, &none, 1, &mut rng);
            let step = Step::ResidualBackward {
                n,
                da: n,
                db: n,
                dout: n,
            };
            assert_step_matches(&name("residual_backward"), step, 1, &none, 1, &mut rng);
            let (batch, t, vocab) = (
                pick(&mut rng, 1, 3),
                pick(&mut rng, 1, 20),
                pick(&mut rng, 2, 40),
            );
            let step = Step::Embedding {
                batch,
                t,
                c,
                out: batch * t * c,
                tokens: batch * t,
                wte: vocab * c,
                wpe: t * c,
            };
            assert_step_matches(&name("embedding"), step, vocab as u32, &none, 1, &mut rng);
            let step = Step::EmbeddingBackward {
                batch,
                t,
                c,
                dwte: vocab * c,
                dwpe: t * c,
                dout: batch * t * c,
                tokens: batch * t,
            };
            assert_step_matches(
                &name("embedding_backward"),
                step,
                vocab as u32,
                &none,
                batch * t,
                &mut rng,
            );
            let step = Step::SoftmaxXent {
                rows,
                v: vocab,
                losses: rows,
                probs: rows * vocab,
                logits: rows * vocab,
                targets: rows,
            };
            assert_step_matches(
                &name("softmax_xent"),
                step,
                vocab as u32,
                &none,
                vocab,
                &mut rng,
            );
            let scaled = Scalars {
                loss_scale: 1.0 / rows as f64,
                adamw: None,
            };
            let step = Step::SoftmaxXentBackward {
                rows,
                v: vocab,
                dlogits: rows * vocab,
                probs: rows * vocab,
                targets: rows,
            };
            assert_step_matches(
                &name("softmax_xent_backward"),
                step,
                vocab as u32,
                &scaled,
                1,
                &mut rng,
            );
            let heads = pick(&mut rng, 1, 3);
            let shape = AttentionShape {
                batch,
                t_len: t,
                channels: 8 * heads,
                heads,
            };
            let width = shape.channels;
            let step = Step::Attention {
                shape,
                blocks: BlockLists::causal(t, t.min(8)),
                out: batch * t * width,
                lse: batch * heads * t,
                qkv: batch * t * 3 * width,
                keep: None,
            };
            assert_step_matches(&name("attention"), step, 1, &none, t.max(8), &mut rng);
            let (shards, len) = (pick(&mut rng, 1, 9), pick(&mut rng, 1, 5000));
            let step = Step::ShardGradSum {
                len,
                grads: vec![len; shards],
            };
            assert_step_matches(&name("shard_grad_sum"), step, 1, &none, shards, &mut rng);
            let h = AdamWStep {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                t: round as u64 + 1,
                grad_scale: 0.5,
            };
            let adamw = Scalars {
                loss_scale: 0.0,
                adamw: Some(h),
            };
            let step = Step::AdamW {
                segments: vec![(0, len / 2, true), (len / 2, len - len / 2, false)],
                params: len,
                grads: len,
                m: len,
                v: len,
            };
            assert_step_matches(&name("adamw"), step, 1, &adamw, 1, &mut rng);
        }
    });
}

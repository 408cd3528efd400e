//! Properties of the spec front end, over generated inputs:
//! - parsing any string returns a value or an error, never a panic;
//! - every valid generated `Spec` prints to text that parses back to the same `Spec`.

use std::path::Path;

use cllm::spec::{
    self, Attention, Coords, Gemm, Optimizer, Schedule, Source, Spec, Threads, Vocab,
};
use proptest::prelude::*;

/// Fragments that steer random text towards the grammar's interesting corners.
fn spec_like_text() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "cllm 0.1\n",
        "model gpt {",
        "train {",
        "}",
        "{",
        "=",
        " ",
        "\n",
        "# c\n",
        "steps",
        "heads",
        "4",
        "1e-3",
        "3_000",
        "4k",
        "2 GiB",
        "4x",
        "10%",
        "\"s\"",
        "\"",
        "(",
        ")",
        ",",
        "[",
        "]",
        "window(",
        "lattice(grid(16), radius = 2)",
        "adamw(lr = 1e-3)",
        "none",
        "true",
        "-",
        ".",
        "tokens",
        "1M",
        "1e999",
        "ulam",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = spec::parse(&text, "arbitrary", Path::new("."), &[]);
    }

    #[test]
    fn parsing_spec_like_text_never_panics(text in spec_like_text()) {
        let _ = spec::parse(&text, "spec-like", Path::new("."), &[]);
        let _ = spec::parse("cllm 0.1\n", "with-set", Path::new("."), std::slice::from_ref(&text));
    }
}

fn fraction() -> impl Strategy<Value = f64> {
    // Arbitrary bit patterns of floats in [0, 1): exercises the printer's round trip.
    (0.0f64..1.0).prop_filter("finite", |x| x.is_finite())
}

fn positive(max: f64) -> impl Strategy<Value = f64> {
    (1e-9f64..max).prop_filter("finite", |x| x.is_finite())
}

fn model() -> impl Strategy<Value = spec::Model> {
    (
        1u64..=8,
        1u64..=16,
        1u64..=6,
        1u64..=8,
        32u64..=512,
        any::<bool>(),
        positive(1e-2),
        positive(0.5),
    )
        .prop_flat_map(
            |(heads, head_width, layers, mlp, context, tied, eps, std)| {
                let width = heads * head_width;
                let attention = prop_oneof![
                    Just(Attention::Dense),
                    (1..=context).prop_map(|window| Attention::Window { window }),
                    (1..=context, 1..=context)
                        .prop_map(|(stride, window)| Attention::Strided { stride, window }),
                    (1..=context, 1..=context, 0.5f64..4.0, -3i64..=3, 1i64..=3).prop_map(
                        |(grid, window, radius, shear, scale)| Attention::Lattice {
                            coords: if grid % 2 == 0 {
                                Coords::Grid { width: grid }
                            } else {
                                Coords::Ulam
                            },
                            basis: vec![vec![1, shear], vec![0, scale]],
                            radius,
                            window,
                        }
                    ),
                ];
                let vocab = prop_oneof![
                    Just(Vocab::Bytes),
                    (257u64..100_000).prop_map(|size| Vocab::Words { size })
                ];
                (attention, vocab).prop_map(move |(attention, vocab)| spec::Model {
                    vocab,
                    context,
                    width,
                    layers,
                    heads,
                    mlp: mlp as f64,
                    attention,
                    ln_eps: eps,
                    tied_head: tied,
                    init_std: std,
                    weights: None,
                })
            },
        )
}

fn valid_spec() -> impl Strategy<Value = Spec> {
    let optimizer = (
        positive(1.0),
        fraction(),
        fraction(),
        positive(1.0),
        fraction(),
    )
        .prop_map(|(lr, b1, b2, eps, weight_decay)| Optimizer::AdamW {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay,
        });
    let train = (
        1u64..100_000,
        1u64..=64,
        1u64..=4,
        optimizer,
        0u64..1000,
        fraction(),
        0u8..3,
        any::<u64>(),
        proptest::option::of(positive(10.0)),
    )
        .prop_map(
            |(steps, batch, accumulate, optimizer, warmup, min_frac, kind, seed, clip)| {
                let batch = batch * accumulate;
                let min_lr = Some(optimizer.lr() * min_frac);
                let schedule = match kind {
                    0 => Schedule::Constant { warmup },
                    1 => Schedule::Linear { warmup, min_lr },
                    _ => Schedule::Cosine { warmup, min_lr },
                };
                spec::Train {
                    steps,
                    batch,
                    accumulate,
                    optimizer,
                    schedule,
                    clip_grad: clip,
                    precision: if seed % 2 == 0 {
                        cllm_kernels::bf16::Precision::Fp32
                    } else {
                        cllm_kernels::bf16::Precision::Bf16
                    },
                    seed: seed >> 12,
                    log_every: 1 + warmup,
                }
            },
        );
    let sample = (
        "[a-z0-9+=\"\\\\\n\t ]{0,12}",
        1u64..1000,
        positive(5.0),
        proptest::option::of(1u64..100),
        positive(1.0),
    )
        .prop_map(|(prompt, tokens, temperature, top_k, top_p)| spec::Sample {
            prompt,
            tokens,
            temperature,
            top_k,
            top_p,
            seed: 7,
        });
    let source = prop_oneof![
        (1u64..=3, any::<bool>(), 1u64..5000).prop_map(|(digits, reverse, held_out)| {
            Source::Addition {
                digits,
                reverse,
                held_out,
            }
        }),
        Just(Source::Text {
            path: "data/tinyshakespeare.txt".to_string()
        }),
    ];
    let plan = (
        1u64..=64,
        1u64..=8,
        prop_oneof![Just(Gemm::Native), Just(Gemm::Jit)],
        any::<bool>(),
        any::<bool>(),
        1u64..=3,
    )
        .prop_map(|(threads, mib, gemm, auto, overlap, stages)| spec::Plan {
            threads: if auto {
                Threads::Auto
            } else {
                Threads::Count(threads)
            },
            shards: 1,
            memory_budget: mib * (1 << 20) + if auto { 0 } else { 17 },
            gemm,
            overlap,
            stages,
        });
    (
        model(),
        train,
        sample,
        source,
        fraction(),
        any::<bool>(),
        plan,
        1u64..1000,
        1u64..100,
        any::<bool>(),
    )
        .prop_map(
            |(model, train, sample, source, val_split, shuffle, plan, every, batches, before)| {
                Spec {
                    version: spec::VERSION.to_string(),
                    data: spec::Data {
                        // llm.c's separator is checked to go with GPT-2 text only.
                        separator: match &source {
                            spec::Source::Text { .. } | spec::Source::Jsonl { .. }
                                if before && model.vocab == spec::Vocab::Gpt2 =>
                            {
                                spec::Separator::BeforeEach
                            }
                            _ => spec::Separator::Between,
                        },
                        source,
                        val_split,
                        shuffle,
                    },
                    train,
                    eval: spec::Eval { every, batches },
                    sample,
                    checkpoint: spec::Checkpoint {
                        dir: Some("runs/x".into()),
                        every,
                    },
                    // A stage holds at least one layer.
                    plan: spec::Plan {
                        stages: plan.stages.min(model.layers),
                        ..plan
                    },
                    model,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn printed_specs_parse_back_to_themselves(original in valid_spec(), docs in any::<bool>()) {
        let text = spec::to_cllm(&original, docs);
        match spec::parse(&text, "generated", Path::new("specs"), &[]) {
            Ok(parsed) => prop_assert_eq!(parsed, original, "printed:\n{}", text),
            Err(error) => prop_assert!(false, "printed spec does not parse:\n{}\n{}", text, spec::render_plain(&error)),
        }
    }
}

//! Valid-looking specs at their extremes never panic the planner: every size-like key
//! at small, large and absurd values (alone and together), applied as `--set`
//! overrides to a shipped spec, goes through `check` and `plan` in-process and ends in
//! a plan or an error — never a panic, an overflow or an allocation the admission
//! check (`plan/admission.rs`) should have refused first.

use std::path::Path;

use cllm::{plan, spec};
use proptest::prelude::*;

/// `key=value` overrides, each a size-like key at an extreme or an ordinary value.
fn overrides() -> impl Strategy<Value = Vec<String>> {
    let pick = |key: &'static str, values: &[&'static str]| {
        prop::sample::select(values.to_vec()).prop_map(move |v| format!("{key}={v}"))
    };
    let one = prop_oneof![
        pick(
            "model.layers",
            &[
                "0",
                "1",
                "2",
                "7",
                "96",
                "100000",
                "100000000",
                "18446744073709551615"
            ]
        ),
        pick(
            "model.width",
            &[
                "1",
                "2",
                "3",
                "16",
                "64",
                "96",
                "1000",
                "100000",
                "1000000000000"
            ]
        ),
        pick("model.heads", &["1", "2", "3", "4", "64", "1000000"]),
        pick(
            "model.context",
            &[
                "1 tokens",
                "2 tokens",
                "16 tokens",
                "17 tokens",
                "100000 tokens",
                "100000000 tokens"
            ]
        ),
        pick("model.mlp", &["0.25x", "1x", "4x", "1000x", "100000x"]),
        pick(
            "model.vocab",
            &["bytes", "words(size = 2)", "words(size = 1000000000000)"]
        ),
        pick(
            "model.attention",
            &[
                "dense",
                "window(1)",
                "window(1000000000)",
                "strided(1, 1)",
                "strided(1000000, 2)",
                "lattice(grid(4), radius = 1, window = 2)",
                "lattice(ulam, radius = 3, window = 1)"
            ]
        ),
        pick(
            "train.batch",
            &["1 seqs", "2 seqs", "32 seqs", "1000000000 seqs"]
        ),
        pick("train.accumulate", &["1", "2", "4", "1000000000"]),
        pick("plan.shards", &["1", "2", "4", "8", "1000000"]),
        pick("plan.threads", &["1", "2", "auto", "1024", "1000000"]),
        pick(
            "plan.memory_budget",
            &["1 KiB", "1 MiB", "64 MiB", "1 GiB", "1000 GiB"]
        ),
        pick("eval.batches", &["1", "8", "10000", "1000000000000"]),
    ];
    prop::collection::vec(one, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn check_and_plan_never_panic(overrides in overrides()) {
        let text = std::fs::read_to_string("specs/add.cllm").expect("the shipped spec");
        if let Ok(spec) = spec::parse(&text, "add.cllm", Path::new("specs"), &overrides) {
            let _ = plan::plan(&spec);
        }
    }
}

//! The planner changes speed and memory, never the numbers: every combination of
//! passes trains to the same losses as the graph interpreter did before there was a
//! planner; dead buffers can be poisoned without effect; the arena reuses memory; a
//! plan over budget is refused.

use std::path::Path;

use cllm::plan::{self, PassOptions, PlanError, Recompute};
use cllm::runtime::{self, Backend, RunOptions};
use cllm::spec::{self, Spec};

fn spec_with(shards: u64, extra: &str) -> Spec {
    let text = format!(
        "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 200) }}\n\
         model gpt {{ context = 10 tokens  width = 32  layers = 2  heads = 2 }}\n\
         train {{ steps = 12  batch = 8 seqs  accumulate = 2  optimizer = adamw(lr = 3e-3)  schedule = cosine(warmup = 3 steps) }}\n\
         eval {{ every = 1000 steps  batches = 2 }}\nplan {{ shards = {shards} {extra} }}\n"
    );
    spec::parse(&text, "planner", Path::new("specs"), &[])
        .unwrap_or_else(|e| panic!("{}", spec::render_plain(&e)))
}

/// Losses (as f64 bits) of `spec_with(1, "")` trained by the op-by-op graph
/// interpreter of commit "Reference trainer tests" (before the planner existed), as
/// re-recorded when attention's backward started recomputing its probabilities from
/// the saved log-sum-exp (the first loss, a forward only, kept every bit).
const GOLDEN: [u64; 12] = [
    4617877213338756897,
    4617727402856172308,
    4617533568266081722,
    4617358845459757525,
    4617179869817459613,
    4617059181555552316,
    4616883901293026260,
    4616762366538404273,
    4616624604615002627,
    4616588393875501782,
    4616554074223195056,
    4616485089928872496,
];

fn losses(spec: &Spec, passes: PassOptions, poison: bool, backend: Backend) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        quiet: true,
        passes,
        poison,
        backend,
        ..RunOptions::new(dir.path(), "specs")
    };
    runtime::train(spec, &options).expect("trains").losses
}

const fn passes(fuse: bool, recompute: Recompute) -> PassOptions {
    PassOptions { fuse, recompute }
}

/// Every combination: fusion on or off × each recompute policy.
const PASS_VARIANTS: [PassOptions; 6] = [
    passes(true, Recompute::Auto),
    passes(true, Recompute::Never),
    passes(true, Recompute::All),
    passes(false, Recompute::Auto),
    passes(false, Recompute::Never),
    passes(false, Recompute::All),
];

#[test]
fn every_pass_combination_trains_to_the_pre_planner_losses() {
    let spec = spec_with(1, "");
    for passes in PASS_VARIANTS {
        let bits: Vec<u64> = losses(&spec, passes, false, Backend::Interp)
            .iter()
            .map(|l| l.to_bits())
            .collect();
        assert_eq!(bits, GOLDEN, "{passes:?} changed the numbers");
    }
}

#[test]
fn poisoning_dead_buffers_changes_nothing() {
    for backend in [Backend::Interp, Backend::Jit] {
        for shards in [1, 4] {
            let spec = spec_with(shards, "");
            for passes in PASS_VARIANTS {
                let clean = losses(&spec, passes, false, backend);
                let poisoned = losses(&spec, passes, true, backend);
                assert!(
                    poisoned.iter().all(|l| l.is_finite()),
                    "{backend:?} {passes:?}: {poisoned:?}"
                );
                assert_eq!(
                    clean, poisoned,
                    "{backend:?} {passes:?}, {shards} shards: a buffer was read after its lifetime"
                );
            }
        }
    }
}

#[test]
fn sharding_changes_only_the_rounding() {
    let one = losses(
        &spec_with(1, ""),
        PassOptions::default(),
        false,
        Backend::Interp,
    );
    for shards in [2, 4] {
        let split = losses(
            &spec_with(shards, ""),
            PassOptions::default(),
            false,
            Backend::Interp,
        );
        for (a, b) in one.iter().zip(&split) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs(),
                "{shards} shards: {a} vs {b}"
            );
        }
    }
}

#[test]
fn the_jit_trains_to_the_reference_losses() {
    let spec = spec_with(2, "");
    let reference = losses(&spec, PassOptions::default(), false, Backend::Interp);
    for passes in PASS_VARIANTS {
        let jit = losses(&spec, passes, false, Backend::Jit);
        for (step, (a, b)) in reference.iter().zip(&jit).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs(),
                "{passes:?} step {step}: reference {a} vs JIT {b}"
            );
        }
    }
}

#[test]
fn bench_s_arena_is_at_most_half_the_naive_sum() {
    let spec = spec::load(Path::new("specs/bench-s.cllm"), &[]).unwrap();
    let plan = plan::plan(&spec).unwrap();
    let a = plan.arena;
    assert!(
        a.peak_bytes * 2 <= a.naive_bytes,
        "peak {} vs naive {}",
        a.peak_bytes,
        a.naive_bytes
    );
    assert!(a.peak_bytes >= a.lower_bound_bytes);
    // Only the cheap (elementwise) recomputations: attention fits the default budget.
    assert!(
        plan.recomputed.iter().all(|name| !name.contains("atty")),
        "{:?}",
        plan.recomputed
    );
}

#[test]
fn recomputing_shrinks_the_arena_and_a_small_budget_forces_it() {
    let spec = spec::load(Path::new("specs/long-dense.cllm"), &[]).unwrap();
    let keep = plan::plan_with(
        &spec,
        PassOptions {
            fuse: true,
            recompute: Recompute::Never,
        },
    )
    .unwrap();
    let default = plan::plan(&spec).unwrap();
    assert!(
        default.arena.peak_bytes < keep.arena.peak_bytes,
        "cheap recomputation saves memory"
    );
    let all = plan::plan_with(
        &spec,
        PassOptions {
            fuse: true,
            recompute: Recompute::All,
        },
    )
    .unwrap();
    assert!(all.arena.peak_bytes < keep.arena.peak_bytes);
    // A budget between the two: Auto recomputes some activations, not necessarily all.
    let mut tight = spec.clone();
    tight.plan.memory_budget = (keep.total_bytes() + all.total_bytes()) / 2;
    let auto = plan::plan(&tight).unwrap();
    assert!(!auto.recomputed.is_empty() && auto.total_bytes() <= tight.plan.memory_budget);
    // Below what recomputing everything needs: refused, saying how much it needs.
    tight.plan.memory_budget = all.total_bytes() - 1;
    match plan::plan(&tight) {
        Err(PlanError::OverBudget { needed, budget, .. }) => assert!(needed > budget),
        other => panic!(
            "expected OverBudget, got {:?}",
            other.map(|p| p.total_bytes())
        ),
    }
}

/// Under a budget between "everything recomputed" and "only the cheap ones", Auto
/// recomputes a prefix of the expensive candidates (found by bisection): every plan
/// fits, a larger budget never recomputes more, and the cheap ones are always first.
#[test]
fn fewer_expensive_recomputations_as_the_budget_grows() {
    let spec = spec_with(2, "");
    let cheap_only = plan::plan(&spec).unwrap();
    let all = plan::plan_with(
        &spec,
        PassOptions {
            fuse: true,
            recompute: Recompute::All,
        },
    )
    .unwrap();
    let (lo, hi) = (all.total_bytes(), cheap_only.total_bytes());
    assert!(lo < hi, "attention recomputation must save something here");
    let mut chosen = Vec::new();
    for step in 0..=16 {
        let budget = lo + (hi - lo) * step / 16;
        let mut tight = spec.clone();
        tight.plan.memory_budget = budget;
        let plan = plan::plan(&tight).unwrap();
        assert!(plan.total_bytes() <= budget);
        assert!(plan.recomputed.starts_with(&cheap_only.recomputed));
        let extra = plan.recomputed.len() - cheap_only.recomputed.len();
        chosen.push((budget, extra, plan.total_bytes()));
    }
    // The fewest: no budget's choice recomputes more than another choice that fits it.
    for &(budget, extra, _) in &chosen {
        for &(_, other, bytes) in &chosen {
            assert!(bytes > budget || extra <= other, "{chosen:?}");
        }
    }
    let extras: Vec<usize> = chosen.iter().map(|c| c.1).collect();
    assert!(extras.windows(2).all(|w| w[0] >= w[1]), "{extras:?}");
    // Each count from all of them down to none is the fewest for some budget here.
    assert!((0..=extras[0]).all(|e| extras.contains(&e)), "{extras:?}");
    assert_eq!(extras.last(), Some(&0));
    assert!(
        extras[0] > 0,
        "the tightest budget needs attention recomputed: {extras:?}"
    );
}

/// Parameters, their per-shard gradients and AdamW's state over the budget: refused
/// before any pass runs — from the spec's sizes alone when even a lower bound is over
/// (before the graph is built), else from the graph's exact parameter count.
#[test]
fn a_fixed_state_over_budget_is_refused_at_once() {
    let mut spec = spec_with(1, "");
    spec.plan.memory_budget = 1024;
    match plan::plan(&spec) {
        Err(PlanError::ModelOverBudget {
            needed,
            limit,
            by_machine,
            ..
        }) => assert!(needed > limit && limit == 1024 && !by_machine),
        other => panic!(
            "expected ModelOverBudget, got {:?}",
            other.map(|p| p.total_bytes())
        ),
    }
    // Admission counts the exact parameter state: one byte short of it is refused there,
    // before the graph is built.
    let text = "cllm 0.1\ndata { source = addition(digits = 2, held_out = 200) }\n\
                model gpt { context = 10 tokens  width = 512  layers = 2  heads = 2 }\n\
                train { steps = 1  batch = 1 seqs }\nplan { shards = 1 }\n";
    let mut wide = spec::parse(text, "planner", Path::new("specs"), &[]).unwrap();
    wide.plan.memory_budget = 1 << 40;
    let fixed = plan::plan(&wide).unwrap().fixed_bytes;
    wide.plan.memory_budget = fixed - 1;
    match plan::plan(&wide) {
        Err(PlanError::ModelOverBudget { needed, limit, .. }) => {
            assert!(needed > fixed && limit == fixed - 1)
        }
        other => panic!(
            "expected ModelOverBudget, got {:?}",
            other.map(|p| p.total_bytes())
        ),
    }
}

#[test]
fn shards_must_divide_the_micro_batch() {
    let mut spec = spec_with(1, "");
    spec.plan.shards = 3;
    assert!(matches!(
        plan::plan(&spec),
        Err(PlanError::Shards {
            shards: 3,
            micro_batch: 4,
            suggestion: 2
        })
    ));
}

#[test]
fn the_add_plan_report_is_stable() {
    let mut spec = spec::load(Path::new("specs/add.cllm"), &[]).unwrap();
    spec.plan.threads = cllm::spec::Threads::Count(2); // the worker count shows in the report
    let plan = plan::plan(&spec).unwrap();
    insta::assert_snapshot!(plan::describe("specs/add.cllm", &spec, &plan));
}

/// The model's parameter count (what admission bounds memory with) is the count the
/// graph builds, at a narrow MLP, a tied head and the default alike; admission then
/// accepts a 1×-MLP model whose state fits, which the old 12·C²-per-layer bound refused.
#[test]
fn the_model_counts_the_parameters_the_graph_builds() {
    for extra in ["", "model.mlp=1", "model.mlp=2.5", "model.tied_head=false"] {
        let sets: Vec<String> = (!extra.is_empty())
            .then(|| extra.to_string())
            .into_iter()
            .collect();
        let spec = spec::load(Path::new("specs/bench-xs.cllm"), &sets).unwrap();
        let plan = plan::plan(&spec).unwrap();
        let graph = &plan.graph;
        let built: usize = graph
            .params
            .iter()
            .map(|p| graph.tensor(p.tensor).len())
            .sum();
        assert_eq!(spec.model.parameter_count(), built as u128, "{extra}");
    }
}

/// Fusion and recomputation change no bits on the JIT either: every pass combination
/// trains to the losses of the default passes, bit for bit (the fused GEMM epilogues
/// compute GELU and its backward with the same arithmetic as the separate kernels).
#[test]
fn every_pass_combination_gives_the_jit_the_same_bits() {
    let spec = spec_with(2, "");
    let bits = |passes| -> Vec<u64> {
        let losses = losses(&spec, passes, false, Backend::Jit);
        losses.iter().map(|l| l.to_bits()).collect()
    };
    let default = bits(PassOptions::default());
    for passes in PASS_VARIANTS {
        assert_eq!(
            bits(passes),
            default,
            "{passes:?} changed the JIT's numbers"
        );
    }
}

/// A pipeline cut puts every parameter in exactly one stage: the embeddings (and the
/// tied head's `wte`) with the first, the final LayerNorm with the last.
#[test]
fn a_pipeline_cut_holds_every_parameter_once() {
    use cllm::plan::scaling::Network;
    use cllm::plan::stages;
    let spec = spec::load(Path::new("specs/bench-s.cllm"), &[]).unwrap();
    let plan = cllm::plan::plan(&spec).unwrap();
    let net = Network::parse("10Gbit,50us").unwrap();
    let c = spec.model.width as usize;
    for count in 1..=6 {
        let pipeline = stages::predict(&plan, count, 8, (5e10, 2e10), &net).unwrap();
        let params: usize = pipeline.stages.iter().map(|s| s.params).sum();
        assert_eq!(
            params as u128,
            spec.model.parameter_count(),
            "{count} stages"
        );
        let blocks: Vec<usize> = pipeline
            .stages
            .iter()
            .flat_map(|s| s.blocks.clone())
            .collect();
        assert_eq!(blocks, (0..6).collect::<Vec<_>>());
        // wte (V·C) and wpe (T·C) ride with the first stage, ln_f (2C) with the last.
        let (first, last) = (&pipeline.stages[0], pipeline.stages.last().unwrap());
        assert!(first.params >= (256 + 256) * c, "{first:?}");
        assert_eq!(first.in_flight, count.min(8));
        assert_eq!(last.in_flight, 1);
        assert!(last.params >= 2 * c);
        assert!((pipeline.bubble - (count - 1) as f64 / (count + 7) as f64).abs() < 1e-12);
        if count == 1 {
            assert!((pipeline.efficiency - 1.0).abs() < 1e-12);
        }
    }
    assert!(stages::predict(&plan, 7, 8, (5e10, 2e10), &net).is_none());
}

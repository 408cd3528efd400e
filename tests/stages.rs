//! Pipeline stages give the single process's bits: P stages × Q replicas as threads of
//! this process (`ThreadRanks`, the exchange contract MPI fulfils), each a machine
//! running its run of the layers in a 1F1B schedule over its replica's block of the
//! shards, against one process — parameters and AdamW moments after training (eval and
//! checkpoints on the way), every rank's losses; and a checkpoint written by 2 stages
//! resumes on 1 process, on 4 stages and on 2 stages × 2 replicas.

use std::path::Path;

use cllm::runtime::{self, RunOptions};
use cllm::spec::{self, Spec};

mod common;
use common::checkpoint_bits as state;

/// A 4-layer model; `accumulate` micro-batches of 4 shards each per step.
fn tiny(stages: usize, accumulate: usize) -> Spec {
    let text = format!(
        "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 50) }}\n\
         model gpt {{ context = 12 tokens  width = 32  layers = 4  heads = 2 }}\n\
         train {{ steps = 6  batch = {} seqs  accumulate = {accumulate}  log_every = 1 }}\n\
         eval {{ every = 3 steps  batches = 2 }}\ncheckpoint {{ every = 3 steps }}\n\
         plan {{ threads = 1  shards = 4  stages = {stages} }}\n",
        8 * accumulate
    );
    spec::parse(&text, "tiny", Path::new("."), &[]).unwrap()
}

fn single(spec: &Spec, dir: &Path) -> runtime::RunSummary {
    let mut options = RunOptions::new(dir, ".");
    options.quiet = true;
    runtime::train(spec, &options).unwrap()
}

/// `spec` on its stages × `replicas` ranks (threads of this process), options set by
/// `how`.
fn on_stages(
    spec: &Spec,
    replicas: usize,
    dir: &Path,
    how: impl Fn(&mut RunOptions),
) -> Vec<runtime::RunSummary> {
    let ranks = spec.plan.stages as usize * replicas;
    let results = common::on_thread_ranks(spec, ranks, dir, how);
    results.into_iter().map(Result::unwrap).collect()
}

/// `spec` on `ranks` threads, each of which must fail: their errors.
fn errors_on(spec: &Spec, ranks: usize, dir: &Path) -> Vec<runtime::RunError> {
    let results = common::on_thread_ranks(spec, ranks, dir, |_| {});
    results
        .into_iter()
        .map(|r| r.map(|_| ()).unwrap_err())
        .collect()
}

fn same_losses(a: &runtime::RunSummary, b: &runtime::RunSummary) -> bool {
    let bits = |s: &runtime::RunSummary| s.losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    bits(a) == bits(b) && a.val_loss.map(f64::to_bits) == b.val_loss.map(f64::to_bits)
}

#[test]
fn stages_give_the_single_process_bits() {
    let root = tempfile::tempdir().unwrap();
    for accumulate in [1, 2] {
        let dir = root.path().join(format!("one-a{accumulate}"));
        let one = single(&tiny(1, accumulate), &dir);
        let expected = state(&dir);
        for (stages, replicas) in [(2, 1), (3, 1), (4, 1), (2, 2), (2, 4)] {
            let layout = format!("{stages} stages × {replicas}, accumulate {accumulate}");
            let dir = root
                .path()
                .join(format!("p{stages}q{replicas}-a{accumulate}"));
            let summaries = on_stages(&tiny(stages, accumulate), replicas, &dir, |_| {});
            assert_eq!(state(&dir), expected, "{layout}: parameters and moments");
            for s in &summaries {
                assert!(same_losses(s, &one), "{layout}: every rank's losses");
            }
        }
    }
}

/// A checkpoint written by 2 stages at step 3 resumes on 1 process, on 4 stages and on
/// 2 stages × 2 replicas, and each ends with the bits of the run never stopped.
#[test]
fn a_two_stage_checkpoint_resumes_on_one_process_and_on_other_layouts() {
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    single(&tiny(1, 1), &whole);
    let expected = state(&whole);
    let two = root.path().join("two");
    on_stages(&tiny(2, 1), 1, &two, |o| o.stop_at = Some(3));
    assert_ne!(state(&two), expected, "stopped at step 3 of 6");
    for (stages, replicas) in [(1, 1), (4, 1), (2, 2)] {
        let dir = root.path().join(format!("resumed-on-{stages}x{replicas}"));
        common::copy_folder(&two, &dir);
        let resume = |o: &mut RunOptions| o.resume = Some(dir.clone());
        match stages * replicas {
            1 => {
                let mut options = RunOptions::new(&dir, ".");
                options.quiet = true;
                resume(&mut options);
                runtime::train(&tiny(1, 1), &options).unwrap();
            }
            _ => {
                on_stages(&tiny(stages, 1), replicas, &dir, resume);
            }
        }
        let layout = format!("{stages} stage(s) × {replicas}");
        assert_eq!(state(&dir), expected, "resumed on {layout}");
    }
}

/// Ranks that are not stages × a replica count splitting the shards are refused, with
/// the counts that would do.
#[test]
fn a_rank_count_that_is_not_the_stage_count_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let spec = tiny(2, 1);
    for error in errors_on(&spec, 3, root.path()) {
        let text = error.to_string();
        assert!(
            text.contains("3 rank(s) cannot run plan.stages = 2"),
            "{text}"
        );
        let help = format!("{:?}", miette::Report::new(error));
        assert!(help.contains("2, 4 or 8"), "{help}");
    }
}

/// A stage whose memory (the model's state and its passes in flight, each in the
/// stage's own arena) is over the budget is refused before anything is allocated,
/// naming the stage; every rank stops.
#[test]
fn a_stage_over_the_memory_budget_is_refused_by_name() {
    use cllm::plan::pipeline::StagePlan;
    let root = tempfile::tempdir().unwrap();
    // One process holds one whole arena; stage 0 of P holds P arenas of its own, each
    // smaller, and less of the gradient buffers: pick a P where it holds more all the
    // same, and a budget between the two.
    let (spec, budget) = [2, 3, 4]
        .into_iter()
        .find_map(|stages| {
            // One shard of 64 sequences: activations outweigh the parameters; 4
            // micro-batches a step, so stage 0 keeps P passes in flight.
            let mut spec = tiny(stages, 4);
            spec.train.batch = 4 * 64;
            spec.plan.shards = 1;
            let plan = cllm::plan::plan(&spec).unwrap();
            let division = StagePlan::new(&plan, stages).unwrap();
            let stage_0 = division.held(&plan, 0, 0..plan.shards, 4, None).total();
            let alone = plan.total_bytes();
            eprintln!("{stages} stages: stage 0 holds {stage_0} B, one process {alone} B");
            (stage_0 > alone).then(|| (spec, (stage_0 + alone) / 2))
        })
        .expect("some stage 0 holds more than one process");
    let mut spec = spec;
    spec.plan.memory_budget = budget;
    let mut alone = spec.clone();
    alone.plan.stages = 1;
    single(&alone, &root.path().join("one"));
    let errors: Vec<String> = errors_on(&spec, spec.plan.stages as usize, root.path())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("stage 0 needs")),
        "{errors:?}"
    );
}

/// The reference interpreter as stages: the same bits as the interpreter alone (its
/// kernels read the stage's compact gradient buffers through the same places).
#[test]
fn the_interpreter_as_stages_gives_its_own_single_process_bits() {
    let root = tempfile::tempdir().unwrap();
    let interp = |o: &mut RunOptions| o.backend = runtime::Backend::Interp;
    let alone = root.path().join("alone");
    let mut options = RunOptions::new(&alone, ".");
    options.quiet = true;
    interp(&mut options);
    runtime::train(&tiny(1, 2), &options).unwrap();
    let split = root.path().join("split");
    on_stages(&tiny(2, 2), 1, &split, interp);
    assert_eq!(state(&split), state(&alone));
}

/// Each stage holds only the parameters its kernels touch — with replicas too, and its
/// gradient buffers and moments only theirs: its own blocks', the first the
/// embeddings, the last the final LayerNorm, and the tied `wte` both (the embeddings
/// read it, the head multiplies by it). Over one replica's stages, the whole model once,
/// `wte` twice.
#[test]
fn each_stage_holds_only_the_parameters_its_kernels_touch() {
    use cllm::machine::{Machine, ThreadRanks};
    let spec = tiny(4, 1);
    let plan = cllm::plan::plan(&spec).unwrap();
    let graph = plan.graph.clone();
    let len = |i: usize| 4 * graph.tensor(graph.params[i].tensor).len() as u64;
    let whole: u64 = (0..graph.params.len()).map(len).sum();
    let wte = graph.param_index("wte").unwrap();
    for (stages, replicas) in [(4, 1), (2, 2)] {
        // Per rank: parameter, gradient and moment bytes, and the parameters held.
        let held: Vec<(u64, u64, u64, Vec<String>)> = std::thread::scope(|scope| {
            let ranks: Vec<_> = (ThreadRanks::group(stages * replicas).into_iter())
                .map(|exchange| {
                    let plan = plan.clone();
                    scope.spawn(move || {
                        let mut machine = Machine::<f32>::new(plan);
                        machine.set_stages(exchange, stages, 1).unwrap();
                        let names = (0..machine.graph().params.len())
                            .filter(|&i| machine.holds_param(i))
                            .map(|i| machine.graph().params[i].name.clone())
                            .collect();
                        let (params, grads) = (machine.param_bytes(), machine.gradient_bytes());
                        (params, grads, machine.moment_bytes(), names)
                    })
                })
                .collect();
            ranks.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let layout = format!("{stages} stages × {replicas}");
        let first_replica = held.iter().step_by(replicas);
        let total: u64 = first_replica.map(|h| h.0).sum();
        assert_eq!(
            total,
            whole + len(wte),
            "{layout}: the whole model once, wte twice"
        );
        let moments: u64 = held.iter().map(|h| h.2).sum();
        assert_eq!(
            moments,
            2 * whole,
            "{layout}: each moment once over all ranks"
        );
        for (r, (params, grads, _, names)) in held.iter().enumerate() {
            let s = r / replicas;
            assert!(*params < whole, "{layout}, rank {r}: {params} of {whole} B");
            assert_eq!(
                grads % params,
                0,
                "{layout}, rank {r}: gradient buffers of its own"
            );
            let blocks = 4 / stages;
            let mine = |n: &String| {
                let block = n.strip_prefix("h.").and_then(|b| b.split('.').next());
                block.is_none_or(|b| b.parse::<usize>().unwrap() / blocks == s)
            };
            assert!(names.iter().all(mine), "{layout}, stage {s}: {names:?}");
            let has = |n: &str| names.iter().any(|m| m == n);
            assert_eq!(
                has("wte"),
                s == 0 || s == stages - 1,
                "{layout}, stage {s}: {names:?}"
            );
            assert_eq!(has("wpe"), s == 0, "{layout}, stage {s}: {names:?}");
            assert_eq!(
                has("ln_f.weight"),
                s == stages - 1,
                "{layout}, stage {s}: {names:?}"
            );
        }
    }
}

/// In bf16 each stage rounds only the weights it holds into its own panels: the same
/// bits as one process in bf16.
#[test]
fn stages_in_bf16_give_the_single_process_bits() {
    let bf16 = |stages| {
        let mut spec = tiny(stages, 2);
        spec.train.precision = cllm_kernels::Precision::Bf16;
        spec
    };
    let root = tempfile::tempdir().unwrap();
    let one = single(&bf16(1), &root.path().join("one"));
    let expected = state(&root.path().join("one"));
    for stages in [2, 4] {
        let dir = root.path().join(format!("p{stages}"));
        let summaries = on_stages(&bf16(stages), 1, &dir, |_| {});
        let got = state(&dir);
        let differ = common::differing(&got, &expected);
        assert!(differ.is_empty(), "{stages} stages: {differ:?} differ");
        assert!(
            summaries.iter().all(|s| same_losses(s, &one)),
            "{stages} stages: losses"
        );
    }
}

/// A cut whose stage would be over the budget is repaired: blocks move off it to its
/// lighter neighbour until every stage fits — and the run keeps one process's bits.
#[test]
fn a_stage_over_the_budget_sheds_blocks_to_its_neighbour() {
    use cllm::plan::pipeline::StagePlan;
    // Activations outweigh the parameters (4 shards of 16 sequences), and stage 0 keeps
    // two passes in flight to stage 1's one: the fastest cut leaves stage 0 heavier.
    let mut spec = tiny(2, 1);
    spec.train.batch = 64;
    spec.train.steps = 3;
    let holds = |spec: &Spec| {
        let plan = cllm::plan::plan(spec).unwrap();
        let division = StagePlan::new(&plan, 2).unwrap();
        let held = |s| division.held(&plan, s, 0..4, 1, None).total();
        (division.blocks.clone(), [held(0), held(1)])
    };
    let (fastest, at) = holds(&spec);
    spec.plan.memory_budget = at[0].max(at[1]) - 1;
    let (repaired, now) = holds(&spec);
    eprintln!("{fastest:?} {at:?} → {repaired:?} {now:?}");
    assert_ne!(repaired, fastest, "a block moved");
    assert!(now.iter().all(|&h| h <= spec.plan.memory_budget), "{now:?}");
    let root = tempfile::tempdir().unwrap();
    // One process needs more than a stage's budget (the budget changes no number).
    let mut alone = tiny(1, 1);
    (alone.train.batch, alone.train.steps) = (64, 3);
    let one = single(&alone, &root.path().join("one"));
    let dir = root.path().join("two");
    let summaries = on_stages(&spec, 1, &dir, |_| {});
    assert_eq!(state(&dir), state(&root.path().join("one")));
    assert!(summaries.iter().all(|s| same_losses(s, &one)));
    // The same spec alone would run the whole model in one stage's budget: refused.
    let mut options = RunOptions::new(root.path().join("alone"), ".");
    options.quiet = true;
    let error = runtime::train(&spec, &options).unwrap_err().to_string();
    assert!(error.contains("runs alone"), "{error}");
}

//! A step split over ranks gives the same bits as one process: R "ranks" as threads of
//! this process (`ThreadRanks`, the same exchange contract MPI fulfils), each a machine
//! with its block of the shards, against single-process runs on 1 and 2 threads; and a
//! checkpoint written on 4 ranks resumes on 1 and on 2 bit for bit.

use std::path::Path;

use cllm::machine::ThreadRanks;
use cllm::runtime::{self, RunOptions};
use cllm::spec::{self, Spec};

mod common;
use common::checkpoint_bits as state;
use common::copy_folder;

fn tiny(threads: u64) -> Spec {
    let text = format!(
        "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 50) }}\n\
         model gpt {{ context = 12 tokens  width = 32  layers = 2  heads = 2 }}\n\
         train {{ steps = 6  batch = 16 seqs  accumulate = 2  log_every = 1 }}\n\
         eval {{ every = 3 steps  batches = 2 }}\ncheckpoint {{ every = 3 steps }}\n\
         plan {{ threads = {threads}  shards = 8 }}\n"
    );
    spec::parse(&text, "tiny", Path::new("."), &[]).unwrap()
}

fn run_on_ranks(ranks: usize, dir: &Path) -> Vec<runtime::RunSummary> {
    run_on_ranks_with(ranks, dir, runtime::Backend::Jit)
}

fn run_on_ranks_with(
    ranks: usize,
    dir: &Path,
    backend: runtime::Backend,
) -> Vec<runtime::RunSummary> {
    run_on_ranks_how(ranks, dir, |options| options.backend = backend)
}

/// R ranks as threads, each with its options set by `how`.
fn run_on_ranks_how(
    ranks: usize,
    dir: &Path,
    how: impl Fn(&mut RunOptions),
) -> Vec<runtime::RunSummary> {
    run_spec_on_ranks(&tiny(1), ranks, dir, how)
}

/// R ranks as threads, each running `spec` with its options set by `how`.
fn run_spec_on_ranks(
    spec: &Spec,
    ranks: usize,
    dir: &Path,
    how: impl Fn(&mut RunOptions),
) -> Vec<runtime::RunSummary> {
    let results = common::on_thread_ranks(spec, ranks, dir, how);
    results.into_iter().map(Result::unwrap).collect()
}

#[test]
fn ranks_give_the_single_process_bits() {
    let root = tempfile::tempdir().unwrap();
    let single = |threads: u64| {
        let dir = root.path().join(format!("t{threads}"));
        let mut options = RunOptions::new(&dir, ".");
        options.quiet = true;
        let summary = runtime::train(&tiny(threads), &options).unwrap();
        (summary, state(&dir))
    };
    let (one, expected) = single(1);
    let (two, on_two) = single(2);
    assert_eq!(on_two, expected, "1 and 2 threads agree");
    assert_eq!(one.losses, two.losses);
    let mut sent = Vec::new();
    for ranks in [1, 2, 4, 8] {
        let dir = root.path().join(format!("r{ranks}"));
        let summaries = run_on_ranks(ranks, &dir);
        let most = summaries.iter().filter_map(|s| s.exchange_bytes).max();
        sent.push(most.unwrap_or(0) as f64 / summaries[0].losses.len() as f64);
        assert_eq!(
            state(&dir),
            expected,
            "{ranks} ranks: parameters and moments"
        );
        for s in &summaries {
            let same = s
                .losses
                .iter()
                .zip(&one.losses)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{ranks} ranks: every rank's losses");
            assert_eq!(s.val_loss.map(f64::to_bits), one.val_loss.map(f64::to_bits));
        }
    }
    // Each rank sends each collective's (R − 1)/R of the gradient: 2(R − 1)/R × 4P per
    // step, ×1.5 from 2 to 4 ranks (gathering whole subtree sums sent (R − 1) × 4P: ×3).
    // Not checked at 8: this model's ~30 parameter chunks are too coarse to cut into 8
    // even runs, and every piece is as long as the longest run.
    eprintln!("bytes sent per step by the busiest rank on 1, 2, 4, 8 ranks: {sent:?}");
    assert_eq!(sent[0], 0.0, "one rank sends nothing");
    let growth = sent[2] / sent[1];
    assert!(
        growth < 2.0,
        "from 2 to 4 ranks the bytes grew {growth:.2}×"
    );
}

/// A checkpoint written by 4 ranks at step 3 resumes on 1 process and on 2 ranks, and
/// either ends with the bits of the run that was never stopped.
#[test]
fn a_four_rank_checkpoint_resumes_on_one_and_on_two_ranks() {
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    let mut options = RunOptions::new(&whole, ".");
    options.quiet = true;
    runtime::train(&tiny(1), &options).unwrap();
    let expected = state(&whole);
    let four = root.path().join("four");
    run_on_ranks_how(4, &four, |o| o.stop_at = Some(3));
    assert_ne!(state(&four), expected, "stopped at step 3 of 6");
    for ranks in [1, 2] {
        let dir = root.path().join(format!("resumed-on-{ranks}"));
        copy_folder(&four, &dir);
        match ranks {
            1 => {
                let mut options = RunOptions::new(&dir, ".");
                options.quiet = true;
                options.resume = Some(dir.clone());
                runtime::train(&tiny(1), &options).unwrap();
            }
            _ => {
                run_on_ranks_how(ranks, &dir, |o| o.resume = Some(dir.clone()));
            }
        }
        assert_eq!(state(&dir), expected, "4 ranks to step 3, then {ranks}");
    }
}

/// The interpreter sums over ranks its own way (the whole tree twice, other ranks'
/// buffers at −0.0): the same bits as the interpreter alone.
#[test]
fn the_interpreter_over_ranks_gives_its_own_single_process_bits() {
    let root = tempfile::tempdir().unwrap();
    let alone = root.path().join("alone");
    let mut options = RunOptions::new(&alone, ".");
    options.quiet = true;
    options.backend = runtime::Backend::Interp;
    runtime::train(&tiny(1), &options).unwrap();
    let split = root.path().join("split");
    run_on_ranks_with(2, &split, runtime::Backend::Interp);
    assert_eq!(state(&split), state(&alone));
}

#[test]
fn a_rank_count_that_does_not_split_the_shards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny(1);
    let handles: Vec<_> = ThreadRanks::group(3)
        .into_iter()
        .map(|exchange| {
            let mut options = RunOptions::new(dir.path(), ".");
            options.quiet = true;
            options.ranks = Some(exchange);
            let spec = spec.clone();
            std::thread::spawn(move || runtime::train(&spec, &options).map(|_| ()))
        })
        .collect();
    for h in handles {
        let error = h.join().unwrap().unwrap_err();
        let text = format!("{error}");
        assert!(
            text.contains("3 ranks cannot split the plan's 8 shards"),
            "{text}"
        );
        let help = miette::Diagnostic::help(&error).unwrap().to_string();
        assert!(help.contains("1, 2, 4 or 8"), "{help}");
    }
}

/// Ranks that each run their block on several workers (threads ≥ 2 with blocks of 4
/// and 2 shards) finish their block's tree above the workers before the exchange: the
/// same bits as one process.
#[test]
fn ranks_of_several_workers_give_the_single_process_bits() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("single");
    let mut options = RunOptions::new(&dir, ".");
    options.quiet = true;
    runtime::train(&tiny(1), &options).unwrap();
    let expected = state(&dir);
    for (ranks, threads) in [(2, 2), (2, 3), (4, 2)] {
        let dir = root.path().join(format!("r{ranks}t{threads}"));
        run_spec_on_ranks(&tiny(threads), ranks, &dir, |_| {});
        let got = state(&dir);
        let differ = common::differing(&got, &expected);
        assert!(
            differ.is_empty(),
            "{ranks} ranks of {threads} threads: {differ:?} differ"
        );
    }
}

/// The exchange overlapped with backward (`plan.overlap`, the default: each part of each
/// owner's piece sent as soon as backward has finished it) and after the step give the
/// same bits, on 2 and 4 ranks of one worker and 2 ranks of two; the summary says which
/// ran.
#[test]
fn the_exchange_overlapped_with_backward_keeps_the_bits() {
    let root = tempfile::tempdir().unwrap();
    // (ranks, threads): blocks of 4 and 2 shards on one worker, and blocks of 4 on two.
    for (ranks, threads) in [(2, 1), (4, 1), (2, 2)] {
        let mut states = Vec::new();
        for overlap in [true, false] {
            let mut spec = tiny(threads);
            spec.plan.overlap = overlap;
            let dir = root.path().join(format!("r{ranks}t{threads}-{overlap}"));
            let summaries = run_spec_on_ranks(&spec, ranks, &dir, |_| {});
            for s in &summaries {
                let (_, overlapped) = s.all_to_all_wait.expect("over ranks");
                assert_eq!(overlapped, overlap, "{ranks} ranks");
            }
            states.push(state(&dir));
        }
        assert!(
            states[0] == states[1],
            "{ranks} ranks: overlap changed bits"
        );
    }
}

/// In bf16 every rank rounds the same updated weights into its own panels, and the
/// shards' products do not depend on which rank runs them: 2 and 4 ranks (one worker
/// each, and 2 ranks of 2 threads) end with one process's bf16 bits, which are not
/// fp32's.
#[test]
fn ranks_in_bf16_give_the_single_process_bits() {
    let bf16 = |threads: u64| {
        let mut spec = tiny(threads);
        spec.train.precision = cllm_kernels::Precision::Bf16;
        spec
    };
    let root = tempfile::tempdir().unwrap();
    let single = |spec: &Spec, name: &str| {
        let dir = root.path().join(name);
        let mut options = RunOptions::new(&dir, ".");
        options.quiet = true;
        let summary = runtime::train(spec, &options).unwrap();
        (summary, state(&dir))
    };
    let (one, expected) = single(&bf16(1), "bf16");
    let (_, fp32) = single(&tiny(1), "fp32");
    assert_ne!(expected, fp32, "bf16 products left fp32's bits");
    for (ranks, threads) in [(2, 1), (4, 1), (2, 2)] {
        let dir = root.path().join(format!("r{ranks}t{threads}"));
        let summaries = run_spec_on_ranks(&bf16(threads), ranks, &dir, |_| {});
        let got = state(&dir);
        let differ = common::differing(&got, &expected);
        assert!(
            differ.is_empty(),
            "{ranks} ranks of {threads} threads in bf16: {differ:?} differ"
        );
        for s in &summaries {
            let same = (s.losses.iter().zip(&one.losses)).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{ranks} ranks of {threads} threads in bf16: losses");
        }
    }
}

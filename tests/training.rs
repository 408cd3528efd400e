//! End-to-end training with the reference interpreter: determinism, stop and resume
//! bit for bit, learning the addition task, and clear failures.

use std::path::Path;

use cllm::checkpoint;
use cllm::runtime::{self, Backend, RunError, RunOptions, RunSummary};

mod common;
use cllm::spec::{self, Spec};

/// A small addition model that trains in well under a second per 10 steps.
fn tiny_addition(extra: &str) -> Spec {
    let text = format!(
        "cllm 0.1\n\
         data {{ source = addition(digits = 2, held_out = 200) }}\n\
         model gpt {{ context = 10 tokens  width = 32  layers = 1  heads = 2 }}\n\
         train {{ steps = 30  batch = 8 seqs  accumulate = 2  optimizer = adamw(lr = 3e-3)  schedule = cosine(warmup = 5 steps) }}\n\
         eval {{ every = 1000 steps  batches = 2 }}\n\
         checkpoint {{ every = 10 steps }}\n\
         {extra}\n"
    );
    spec::parse(&text, "tiny", Path::new("specs"), &[])
        .unwrap_or_else(|e| panic!("{}", spec::render_plain(&e)))
}

fn options(run_dir: &Path, backend: Backend) -> RunOptions {
    RunOptions {
        quiet: true,
        backend,
        ..RunOptions::new(run_dir.to_path_buf(), "specs")
    }
}

fn run(spec: &Spec, options: &RunOptions) -> RunSummary {
    runtime::train(spec, options).unwrap_or_else(|e| panic!("training failed: {e}"))
}

on_both_backends! {
fn the_same_seed_gives_the_same_run_bit_for_bit(backend) {
    let spec = tiny_addition("");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run(&spec, &options(a.path(), backend));
    let second = run(&spec, &options(b.path(), backend));
    let bits = |s: &RunSummary| s.losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first), bits(&second));
    assert!(
        first.losses[29] < first.losses[0],
        "the loss goes down: {:?}",
        first.losses
    );

    let mut other_seed = spec.clone();
    other_seed.train.seed = 7;
    let c = tempfile::tempdir().unwrap();
    assert_ne!(
        bits(&first),
        bits(&run(&other_seed, &options(c.path(), backend))),
        "the seed must matter"
    );
}

fn stop_and_resume_gives_the_uninterrupted_run_bit_for_bit(backend) {
    let spec = tiny_addition("");
    let (whole_dir, split_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole = run(&spec, &options(whole_dir.path(), backend));

    let mut first = options(split_dir.path(), backend);
    first.stop_at = Some(13);
    let part1 = run(&spec, &first);
    assert!(part1.stopped_early);
    assert_eq!(part1.steps, 13);

    // Rows a killed run logged past its checkpoint (step 13): the resume replays those
    // steps, and each must appear once.
    let metrics = split_dir.path().join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    // A loss no real row has, to find these rows again.
    text += "{\"step\":14,\"loss\":-77.25}\n{\"step\":15,\"loss\":-77.25}\n";
    std::fs::write(&metrics, text).unwrap();

    let mut second = options(split_dir.path(), backend);
    second.resume = Some(split_dir.path().to_path_buf());
    let part2 = run(&spec, &second);
    assert_eq!(part2.steps, 30);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let steps: Vec<u64> = (text.lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|row| row.get("loss").is_some())
        .map(|row| row["step"].as_u64().unwrap())
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "metrics.jsonl repeats steps after a resume: {steps:?}"
    );
    assert!(!text.contains("-77.25"), "a killed run's rows past the checkpoint were kept");

    let joined: Vec<u64> = part1
        .losses
        .iter()
        .chain(&part2.losses)
        .map(|l| l.to_bits())
        .collect();
    let expected: Vec<u64> = whole.losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(joined, expected, "losses of the resumed run differ");
    assert_eq!(part2.final_loss.to_bits(), whole.final_loss.to_bits());

    let load = |dir: &Path| {
        checkpoint::load(&dir.join(checkpoint::FILE_NAME))
            .unwrap()
            .tensors
    };
    let (a, b) = (load(whole_dir.path()), load(split_dir.path()));
    assert_eq!(a.len(), b.len());
    for (name, (_, values)) in &a {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(values),
            bits(&b[name].1),
            "tensor {name} differs after resume"
        );
    }
}

fn resuming_a_finished_run_says_so(backend) {
    let spec = tiny_addition("");
    let dir = tempfile::tempdir().unwrap();
    run(&spec, &options(dir.path(), backend));
    let mut again = options(dir.path(), backend);
    again.resume = Some(dir.path().to_path_buf());
    assert!(matches!(
        runtime::train(&spec, &again),
        Err(RunError::NothingToResume { step: 30, .. })
    ));
}

fn a_diverging_run_stops_and_names_the_step(backend) {
    let spec = tiny_addition("");
    let mut spec = spec;
    spec.train.optimizer = spec::Optimizer::AdamW {
        lr: 1e30,
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.0,
    };
    spec.train.clip_grad = None;
    spec.train.schedule = spec::Schedule::Constant { warmup: 0 };
    let dir = tempfile::tempdir().unwrap();
    match runtime::train(&spec, &options(dir.path(), backend)) {
        Err(RunError::NonFinite { step, .. } | RunError::Diverged { step, .. }) => {
            assert!(step >= 2, "step {step}")
        }
        other => panic!("expected a divergence error, got {other:?}"),
    }
}

fn a_non_finite_state_is_never_saved_as_good(backend) {
    // lr = 1e300 sends every parameter past f32 in the first update: one step, so no
    // later loss can notice; the state must be checked before the checkpoint is written.
    let mut spec = tiny_addition("");
    spec.train.steps = 1;
    spec.train.optimizer = spec::Optimizer::AdamW {
        lr: 1e300,
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.0,
    };
    spec.train.schedule = spec::Schedule::Constant { warmup: 0 };
    let dir = tempfile::tempdir().unwrap();
    match runtime::train(&spec, &options(dir.path(), backend)) {
        Err(RunError::NonFiniteState { step: 1, tensor }) => assert!(!tensor.is_empty()),
        other => panic!("expected a non-finite state error at step 1, got {other:?}"),
    }
    let checkpoint = dir.path().join(cllm::checkpoint::FILE_NAME);
    assert!(!checkpoint.exists(), "a non-finite checkpoint was written");
}

fn equal_runs_write_equal_checkpoint_files(backend) {
    let spec = tiny_addition("");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&spec, &options(a.path(), backend));
    run(&spec, &options(b.path(), backend));
    let bytes = |d: &tempfile::TempDir| std::fs::read(d.path().join(checkpoint::FILE_NAME)).unwrap();
    assert!(bytes(&a) == bytes(&b), "two equal runs wrote different checkpoint bytes");
    // And the file is still a safetensors file that loads.
    checkpoint::load(&a.path().join(checkpoint::FILE_NAME)).unwrap();
}

fn metrics_and_checkpoint_are_written(backend) {
    let spec = tiny_addition("");
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&spec, &options(dir.path(), backend));
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == 30 && l["loss"].is_number())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == 30 && l["accuracy"].is_number()),
        "{metrics}"
    );
    // Every row says what it is and when: train rows carry their MFU too.
    for row in &lines {
        assert!(row["kind"] == "train" || row["kind"] == "eval", "{row}");
        assert!(row["time"].as_f64().unwrap() > 1.7e9, "wall-clock seconds: {row}");
        assert!(row["elapsed_s"].as_f64().unwrap() >= 0.0, "{row}");
        if row["kind"] == "train" {
            assert!(row["mfu_percent"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
    assert!(lines.iter().any(|l| l["kind"] == "eval"), "{metrics}");
    let a = summary.averages;
    assert!(a.wall_seconds > 0.0 && a.tokens_per_s > 0.0 && a.mfu > 0.0, "{a:?}");
    assert!(summary.checkpoint.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a temporary checkpoint was left behind"
    );
}
}

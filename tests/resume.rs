//! A resumed run is the run that was stopped: `cllm run --resume DIR` (the command a
//! stopped run prints) reads the run's resolved spec from its checkpoint, with every
//! override it was started with, and writes into that folder; a spec or `--set` that
//! would change the run is refused naming the key. (The bug this guards: the printed
//! hint dropped `--out` and `--steps`, so following it trained into another folder
//! on the spec's own, longer schedule.)

mod common;
use common::cllm;

use std::path::Path;
use std::process::Output;

/// A short addition run: 50 held-out problems, no evaluation until the end.
const SMALL: [&str; 4] = [
    "--set",
    "eval.every=1000",
    "--set",
    "data.source=addition(digits = 3, held_out = 50)",
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn checkpoint(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint.safetensors")).expect("a checkpoint")
}

/// `cllm run specs/add.cllm --out DIR EXTRA SMALL`, which must succeed.
fn run_to(dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.display().to_string();
    let mut args = vec!["run", "specs/add.cllm", "--quiet", "--out", &dir];
    args.extend(extra);
    args.extend(SMALL);
    let out = cllm(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn the_printed_command_continues_the_run_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    let (stopped, whole) = (root.path().join("stopped"), root.path().join("whole"));
    let out = run_to(&stopped, &["--steps", "40", "--stop-at", "15"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("resume with: cllm "))
        .unwrap_or_else(|| panic!("a resume hint in {stdout:?}"));
    assert_eq!(hint, format!("run --resume {}", stopped.display()));
    let resumed = cllm(&hint.split(' ').collect::<Vec<_>>());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    run_to(&whole, &["--steps", "40"]);
    assert!(
        checkpoint(&stopped) == checkpoint(&whole),
        "stopped at 15 and resumed with the printed command, the run must end where the \
         uninterrupted one does, byte for byte"
    );
    let metrics = std::fs::read_to_string(stopped.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"step\":40"),
        "the resumed run logs into its folder"
    );
}

/// In bf16 the products read each weight's panels, made from the parameters once per
/// step: a run that kept reading old panels after AdamW would still train, and
/// differ from one resumed midway (which makes them anew from the checkpoint).
#[test]
fn a_bf16_run_resumed_midway_ends_where_the_whole_run_does() {
    let root = tempfile::tempdir().unwrap();
    let (stopped, whole) = (root.path().join("stopped"), root.path().join("whole"));
    let bf16 = ["--set", "train.precision=bf16"];
    run_to(
        &stopped,
        &[&["--steps", "12", "--stop-at", "5"][..], &bf16].concat(),
    );
    let d = stopped.display().to_string();
    let resumed = cllm(&["run", "--resume", &d, "--quiet"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    run_to(&whole, &[&["--steps", "12"][..], &bf16].concat());
    assert!(
        checkpoint(&stopped) == checkpoint(&whole),
        "a bf16 run stopped at 5 and resumed must end where the uninterrupted one does"
    );
}

#[test]
fn a_resume_that_would_change_the_run_is_refused_naming_the_key() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    run_to(&dir, &["--steps", "30", "--stop-at", "10"]);
    let before = checkpoint(&dir);
    let d = dir.display().to_string();
    for (args, key) in [
        // Under the cosine schedule, more steps change every step's learning rate.
        (
            vec!["run", "--resume", &d, "--steps", "50"],
            "`train.steps`",
        ),
        (
            vec!["run", "--resume", &d, "--set", "model.width=32"],
            "`model.width`",
        ),
        (
            vec![
                "run",
                "specs/add.cllm",
                "--resume",
                &d,
                "--set",
                "train.seed=7",
            ],
            "`train.seed`",
        ),
        // The spec file alone: its 3 000 steps and 1 000 held-out problems are not
        // this run's.
        (
            vec!["run", "specs/add.cllm", "--resume", &d],
            "`train.steps`",
        ),
        (vec!["run", "--resume", &d, "--out", "elsewhere"], "--out"),
    ] {
        let out = cllm(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(key),
            "{args:?} names {key}: {}",
            stderr(&out)
        );
    }
    assert!(
        checkpoint(&dir) == before,
        "a refused resume touches nothing"
    );
    // What only says how the run is watched may change.
    let out = cllm(&[
        "run",
        "--resume",
        &d,
        "--quiet",
        "--threads",
        "1",
        "--set",
        "train.log_every=3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_constant_schedule_may_train_further() {
    let root = tempfile::tempdir().unwrap();
    let (extended, whole) = (root.path().join("extended"), root.path().join("whole"));
    let constant = ["--set", "train.schedule=constant(warmup = 5 steps)"];
    run_to(&extended, &[&["--steps", "20"][..], &constant].concat());
    let d = extended.display().to_string();
    let out = cllm(&["run", "--resume", &d, "--quiet", "--steps", "30"]);
    assert!(out.status.success(), "{}", stderr(&out));
    run_to(&whole, &[&["--steps", "30"][..], &constant].concat());
    assert!(
        checkpoint(&extended) == checkpoint(&whole),
        "20 steps then 10 more under a constant schedule are 30 steps"
    );
}

/// A run resumed on other kernels (another CPU, or another `CLLM_ISA`) goes on, and
/// says that its bits now differ from the uninterrupted run's on the first route;
/// resumed on the same route it says nothing.
#[test]
fn a_resume_on_other_kernels_says_its_bits_differ() {
    use cllm_kernels::cpu::{Isa, supported};
    let Some(wide) = supported().last().copied().filter(|&w| w != Isa::Portable) else {
        eprintln!("skipped: this CPU has the portable kernels only");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let on = |isa: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cllm"))
            .args(args)
            .env("CLLM_ISA", isa)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir_arg = dir.to_str().unwrap();
    let start = [
        &["run", "specs/add.cllm", "--out", dir_arg, "--steps", "6"][..],
        &SMALL,
    ]
    .concat();
    on("portable", &[&start[..], &["--stop-at", "2"]].concat());
    let said = on("portable", &["run", "--resume", dir_arg, "--stop-at", "4"]);
    assert!(!said.contains("note: the steps up to"), "{said}");
    let said = on(wide.name(), &["run", "--resume", dir_arg]);
    let note = format!("ran on portable, these run on {}", wide.name());
    assert!(said.contains(&note), "{said}");
}

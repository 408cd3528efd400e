//! kill -9 at any moment, then `--resume`, ends where the uninterrupted run ends, bit
//! for bit: the run is killed (SIGKILL, no chance to clean up) at several points of a
//! short run that checkpoints every step — so some kills land inside a checkpoint
//! write, leaving its temporary file — resumed (killed once more in some trials), and
//! the final checkpoint file must equal the uninterrupted run's byte for byte (equal
//! runs write equal files).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ARGS: [&str; 8] = [
    "--steps",
    "60",
    "--set",
    "checkpoint.every=1",
    "--set",
    "eval.every=1000",
    "--set",
    "data.source=addition(digits = 3, held_out = 50)",
];

/// `cllm run specs/add.cllm ARGS --out dir [--resume dir]`, killed after `kill_after`
/// if given; returns whether it ran to the end.
fn run(dir: &Path, resume: bool, kill_after: Option<Duration>) -> bool {
    let dir = dir.display().to_string();
    let mut args = vec!["run", "specs/add.cllm", "--out", &dir];
    args.extend(ARGS);
    if resume {
        args.extend(["--resume", &dir]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cllm starts");
    if let Some(after) = kill_after {
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_none() {
            child.kill().expect("SIGKILL is delivered");
            child.wait().unwrap();
            return false;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "cllm {args:?} failed: {status}");
    true
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_run_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    let reference = root.path().join("reference");
    assert!(run(&reference, false, None));
    let expected = std::fs::read(reference.join("checkpoint.safetensors")).unwrap();
    let mut inside_a_write = 0;
    let trials = [
        (40, None),
        (90, Some(60)),
        (150, None),
        (230, Some(120)),
        (320, None),
    ];
    for (trial, (first_ms, second_ms)) in trials.into_iter().enumerate() {
        let dir = root.path().join(format!("trial-{trial}"));
        let mut finished = run(&dir, false, Some(Duration::from_millis(first_ms)));
        let mut kills = [second_ms, None].into_iter();
        while !finished {
            inside_a_write += std::fs::read_dir(&dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".checkpoint.safetensors.tmp.")
                })
            }) as usize;
            let resume = dir.join("checkpoint.safetensors").exists();
            let kill = kills.next().flatten().map(Duration::from_millis);
            finished = run(&dir, resume, kill);
        }
        let got = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
        assert!(
            got == expected,
            "trial {trial} (killed at {first_ms} ms, then {second_ms:?}) ended elsewhere"
        );
    }
    eprintln!("{inside_a_write} kill(s) landed inside a checkpoint write");
}

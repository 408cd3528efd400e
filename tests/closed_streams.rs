//! Output nobody reads: a reader that goes away (`cllm run spec.cllm | head -3`) or a
//! log on a full disk stops the printing, never the work — no panic, and a run trains
//! to its end and saves its checkpoint. A broken pipe keeps the work's exit status; a
//! full disk lost output nobody chose to drop, so the command says so and exits 1.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// Runs `cllm args…` with stdout (and, with `both`, stderr) a pipe whose reader has
/// gone before the first line; returns the exit status.
fn with_reader_gone(args: &[&str], both: bool) -> ExitStatus {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cllm"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command.stderr(if both { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    child.wait().unwrap()
}

fn trains_here(run: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "specs/add.cllm".into(),
        "--steps".into(),
        "20".into(),
        "--set".into(),
        "train.log_every=1".into(),
        "--out".into(),
        run.to_str().unwrap().into(),
    ]
}

#[test]
fn a_run_whose_reader_went_away_trains_to_its_end_and_saves() {
    let root = tempfile::tempdir().unwrap();
    for (name, both) in [("stdout", false), ("both", true)] {
        let run = root.path().join(name);
        let args = trains_here(&run);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let status = with_reader_gone(&args, both);
        assert!(status.success(), "{name}: {status:?}");
        assert!(run.join("checkpoint.safetensors").is_file(), "{name}");
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        assert!(metrics.contains("\"step\":20"), "{name}: {metrics}");
    }
    // The commands that only print end as quietly.
    for args in [
        &["ir", "specs/add.cllm"][..],
        &["check", "--resolved", "specs/add.cllm"],
        &["plan", "specs/add.cllm"],
    ] {
        let status = with_reader_gone(args, true);
        assert!(status.success(), "cllm {args:?}: {status:?}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn output_lost_to_a_full_disk_is_an_error_after_the_work() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let args = trains_here(&run);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing to standard output failed") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(run.join("checkpoint.safetensors").is_file(), "{stderr}");
}

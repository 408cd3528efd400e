//! Inputs a hostile (or unlucky) user gives: FIFOs, devices and folders where files go,
//! non-UTF-8 specs. Each must end in well under a second with exit 1 and a message
//! naming the file — never a hang, a panic or an abort. (Issue 13's table grows here.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cllm args…` with a 20-second guard: a hang is a failure, not a stuck test.
fn cllm(args: &[&str]) -> (Option<i32>, String) {
    run_guarded(env!("CARGO_BIN_EXE_cllm"), args)
}

fn fifo(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let status = Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    path.display().to_string()
}

fn spec_with_source(dir: &Path, source: &str) -> String {
    let path = dir.join("spec.cllm");
    std::fs::write(
        &path,
        format!(
            "cllm 0.1\ndata {{ source = text(\"{source}\") }}\n\
             model gpt {{ context = 16 tokens  width = 16  layers = 1  heads = 2 }}\n\
             train {{ steps = 1  batch = 2 seqs }}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn files_that_are_not_regular_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec_fifo = fifo(d, "spec-fifo.cllm");
    let data_fifo = fifo(d, "data.fifo");
    let ckpt_fifo = fifo(d, "ckpt.safetensors");
    std::fs::create_dir(d.join("folder.cllm")).unwrap();
    std::fs::write(d.join("latin1.cllm"), b"cllm 0.1\n# caf\xe9\n").unwrap();
    let with_fifo_data = spec_with_source(d, &data_fifo);
    let fifo_spec_run = d.join("fifo-run");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["check".into(), spec_fifo.clone()],
            "not a regular file",
        ),
        (vec!["run".into(), spec_fifo], "not a regular file"),
        (
            vec!["check".into(), d.join("folder.cllm").display().to_string()],
            "a folder",
        ),
        (
            vec!["check".into(), d.join("latin1.cllm").display().to_string()],
            "line 2, column 6",
        ),
        (
            vec![
                "check".into(),
                "specs/add.cllm".into(),
                "--set".into(),
                "data.source=addition(digits = 9, held_out = 1000000000000)".into(),
                "--set".into(),
                "model.context=32".into(),
            ],
            "held-out problems need about",
        ),
        (
            vec![
                "run".into(),
                with_fifo_data,
                "--out".into(),
                fifo_spec_run.display().to_string(),
            ],
            "not a regular file",
        ),
        (
            vec!["sample".into(), ckpt_fifo.clone()],
            "not a regular file",
        ),
        (
            vec!["sample".into(), "/dev/zero".into()],
            "not a regular file",
        ),
        (
            vec!["run".into(), "--resume".into(), "specs/add.cllm".into()],
            "is a spec, not a run folder",
        ),
        (
            vec!["eval".into(), "specs/add.cllm".into()],
            "is a spec, not a run folder",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (code, stderr) = cllm(&args);
        assert_eq!(code, Some(1), "cllm {args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "cllm {args:?} should say {says:?}:\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cllm {args:?} was slow"
        );
    }
    // /dev/zero as a corpus: refused, not read until memory runs out.
    let zero = spec_with_source(d, "/dev/zero");
    let out = d.join("zero-run").display().to_string();
    let (code, stderr) = cllm(&["run", &zero, "--out", &out]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

/// Runs `cllm args…` under a 2 GiB address-space limit (`ulimit -v`, through `sh`):
/// a size the machine cannot hold must be refused from arithmetic, not discovered by
/// an allocation that aborts.
fn cllm_limited(args: &[&str]) -> (Option<i32>, String) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "ulimit -v 2097152; exec '{}' {}",
        env!("CARGO_BIN_EXE_cllm"),
        quoted.join(" ")
    );
    run_guarded("sh", &["-c", &script])
}

/// Runs `program args…`, its stderr captured, failing the test if it runs past 20 s.
fn run_guarded(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            (child.stderr.take().unwrap())
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code(), stderr);
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("{args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every size-like key at an extreme a spec check accepts or nearly does: exit 1 with a
/// message naming the key, within a 2 GiB address space, for `check`, `plan` and `run`
/// alike — never an abort (exit 134, as 10⁸ layers and a 10⁸-token context gave), a
/// panic (exit 101, as a million threads gave) or a hang (10¹² evaluation batches).
#[test]
fn sizes_the_machine_cannot_hold_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    let cases: &[(&str, &str)] = &[
        ("model.layers=100000000", "layers"),
        ("model.layers=100000", "layers"),
        ("model.context=100000000 tokens", "context"),
        ("model.width=100000", "width"),
        ("model.width=1000000", "width"),
        ("model.heads=1000000", "heads"),
        ("model.mlp=100000x", "memory budget"),
        ("model.vocab=words(size = 1000000000000)", "memory budget"),
        ("train.batch=1000000000 seqs", "memory budget"),
        ("train.accumulate=1000000000", "accumulate"),
        ("plan.shards=1000000", "shards"),
        ("plan.threads=1000000", "threads"),
        ("eval.batches=1000000000000", "eval.batches"),
        (
            "data.source=addition(digits = 9, held_out = 1000000000000)",
            "held-out",
        ),
    ];
    for (set, named) in cases {
        for command in ["check", "plan", "run"] {
            let mut args = vec![command, "specs/add.cllm", "--set", set];
            if command == "run" {
                args.extend(["--steps", "1", "--out", &out]);
            }
            if command == "check" && ["layers", "context", "width", "memory budget"].contains(named)
            {
                // Sizes, not spec mistakes: `check` accepts them; `plan` and `run` refuse.
                continue;
            }
            let (code, stderr) = cllm_limited(&args);
            assert_eq!(code, Some(1), "cllm {args:?}: exit {code:?}\n{stderr}");
            assert!(
                stderr.contains(named),
                "cllm {args:?} does not name `{named}`:\n{stderr}"
            );
        }
    }
}

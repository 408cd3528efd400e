//! Inputs a hostile (or unlucky) user gives: FIFOs, devices and folders where files go,
//! non-UTF-8 specs. Each must end in well under a second with exit 1 and a message
//! naming the file — never a hang, a panic or an abort. (Issue 13's table grows here.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cllm args…` with a 20-second guard: a hang is a failure, not a stuck test.
fn cllm(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cllm starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code(), stderr);
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("cllm {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

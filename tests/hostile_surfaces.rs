//! The surfaces added after the spec parser — sample, plot, resume, data folders,
//! weights — given what a hostile or unlucky user gives them (issue 24): each ends with
//! a clear message and exit 1 (or does the right thing), within a bounded time, under
//! a 4 GiB address space — never a panic, an abort, a hang or a silent wrong result.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `cllm args…` under `ulimit -v 4 GiB`: (exit code, stdout, stderr on one line),
/// failing the test past 60 s.
fn cllm(args: &[&str]) -> (Option<i32>, String, String) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "ulimit -v 4194304; exec '{}' {}",
        env!("CARGO_BIN_EXE_cllm"),
        quoted.join(" ")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("cllm {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let stderr = text(&out.stderr).replace('│', " ");
    let stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    (out.status.code(), text(&out.stdout), stderr)
}

fn refused(args: &[&str], says: &str) {
    let (code, stdout, stderr) = cllm(args);
    assert_eq!(code, Some(1), "cllm {args:?}: {stdout}{stderr}");
    assert!(
        stderr.contains(says),
        "cllm {args:?} should say {says:?}: {stderr}"
    );
}

/// A trained run of the addition task in `dir`.
fn trained(dir: &Path) -> String {
    let run = dir.to_str().unwrap();
    let (code, _, stderr) = cllm(&[
        "run",
        "specs/add.cllm",
        "--steps",
        "4",
        "--quiet",
        "--out",
        run,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    run.to_string()
}

#[test]
fn sample_refuses_absurd_counts_and_streams_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let run = trained(&root.path().join("run"));
    refused(
        &["sample", &run, "--tokens", "18446744073709551615"],
        "more than one sampling call",
    );
    refused(
        &["sample", &run, "--tokens", "4000000000"],
        "more than one sampling call",
    );
    refused(
        &["sample", &run, "--set", "sample.tokens=9007199254740992"],
        "`sample.tokens` asks for",
    );
    let (code, stdout, stderr) = cllm(&["sample", &run, "--tokens", "50", "--prompt", "1+2="]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("1+2="), "{stdout}");
}

#[test]
fn stopping_at_the_checkpoints_step_reports_no_step() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let (code, stdout, stderr) = cllm(&[
        "run",
        "specs/add.cllm",
        "--steps",
        "5",
        "--stop-at",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("no step trained in this invocation"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("NaN") && !stdout.contains("MFU"),
        "{stdout}"
    );
}

#[test]
fn plot_draws_finite_values_leaves_out_huge_ones_and_never_hangs() {
    let root = tempfile::tempdir().unwrap();
    let write = |name: &str, rows: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), rows).unwrap();
        dir.to_str().unwrap().to_string()
    };
    let huge_loss = write(
        "loss",
        "{\"kind\":\"train\",\"step\":1,\"loss\":1e308,\"lr\":0.1}\n\
         {\"kind\":\"train\",\"step\":2,\"loss\":-1e308,\"lr\":0.1}\n",
    );
    refused(&["plot", &huge_loss], "beyond ±1e15");
    let huge_lr = write(
        "lr",
        "{\"kind\":\"train\",\"step\":1,\"loss\":2.0,\"lr\":1.7e308}\n\
         {\"kind\":\"train\",\"step\":2,\"loss\":1.5,\"lr\":0.1}\n",
    );
    let (code, _, stderr) = cllm(&["plot", &huge_lr]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("1 value(s) beyond ±1e15 are not drawn"),
        "{stderr}"
    );
    assert!(Path::new(&huge_lr).join("loss.png").is_file());
}

/// A spec training on `source` (a text or token source) from `dir`.
fn spec(dir: &Path, source: &str, vocab: &str) -> String {
    let path = dir.join("spec.cllm");
    std::fs::write(
        &path,
        format!(
            "cllm 0.1\ndata {{ source = {source} }}\n\
             model gpt {{ context = 16 tokens  width = 16  layers = 1  heads = 2  vocab = {vocab} }}\n\
             train {{ steps = 10  batch = 2 seqs  schedule = constant }}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn data_folders_and_files_are_never_misread() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let out = d.join("out");
    let out = out.to_str().unwrap();
    // A FIFO, or a link to /dev/zero, named *.bin among good shards: refused, not skipped.
    std::fs::create_dir(d.join("shards")).unwrap();
    let tokens: Vec<u8> = (0..4000u16).flat_map(|t| (t % 256).to_le_bytes()).collect();
    std::fs::write(d.join("shards/a.bin"), &tokens).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("shards/b.bin")).unwrap();
    let shards = spec(d, "tokens(\"shards\")", "bytes");
    refused(&["run", &shards, "--out", out], "b.bin");
    // Text given to tokens(): named as text, not read as pairs of bytes.
    std::fs::write(
        d.join("words.txt"),
        "To be, or not to be, that is the question.\n".repeat(200),
    )
    .unwrap();
    let text_as_tokens = spec(d, "tokens(\"words.txt\")", "bytes");
    refused(&["run", &text_as_tokens, "--out", out], "reads as text");
    // A sparse text corpus larger than the machine can hold as tokens: refused before
    // it is read (it aborted allocating 4 bytes a byte).
    std::fs::create_dir(d.join("big")).unwrap();
    let big = std::fs::File::create(d.join("big/huge.txt")).unwrap();
    big.set_len(64 << 30).unwrap();
    let huge = spec(d, "text(\"big\")", "bytes");
    refused(&["run", &huge, "--out", out], "as 32-bit tokens in memory");
}

#[test]
fn a_resume_on_changed_data_is_refused_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let corpus = d.join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(400),
    )
    .unwrap();
    let spec = spec(d, "text(\"corpus.txt\")", "bytes");
    let run = d.join("run");
    let run = run.to_str().unwrap();
    let (code, _, stderr) = cllm(&["run", &spec, "--stop-at", "3", "--quiet", "--out", run]);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::write(
        &corpus,
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. ".repeat(400),
    )
    .unwrap();
    refused(
        &["run", "--resume", run, "--quiet"],
        "the data changed since",
    );
    let (code, _, stderr) = cllm(&["run", "--resume", run, "--quiet", "--allow-data-change"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_arena_is_checked_against_the_machine_not_only_the_budget() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    refused(
        &[
            "run",
            "specs/add.cllm",
            "--set",
            "train.batch=1000000000",
            "--set",
            "plan.memory_budget=100000 GiB",
            "--out",
            out.to_str().unwrap(),
        ],
        "this machine's",
    );
}

#[test]
fn a_shard_truncated_under_a_run_ends_it_with_a_message_not_sigbus() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let shard = d.join("train.bin");
    let tokens: Vec<u8> = (0..2_000_000u32)
        .flat_map(|t| ((t * 7 % 256) as u16).to_le_bytes())
        .collect();
    std::fs::write(&shard, &tokens).unwrap();
    let spec = spec(d, "tokens(\"train.bin\")", "bytes");
    let out = d.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args([
            "run",
            &spec,
            "--quiet",
            "--set",
            "train.steps=1000000",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if an assertion fails first: a million-step run must not outlive the test.
    struct Running(Option<std::process::Child>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(child) = &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let mut running = Running(Some(child));
    let started = Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(true, |t| t.is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no row in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(0)
        .unwrap();
    let child = running.0.as_mut().expect("running");
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = running
        .0
        .take()
        .expect("running")
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("truncated or replaced"), "{stderr}");
}

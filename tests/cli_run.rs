//! `cllm run` and `cllm sample` as a user types them: exit codes, output, and the
//! errors a user sees for bad data.

mod common;
use common::cllm;

use std::path::Path;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_spec(dir: &Path, data: &str, model: &str) -> String {
    let path = dir.join("spec.cllm");
    let body = format!(
        "cllm 0.1\ndata {{ {data} }}\nmodel gpt {{ {model} }}\n\
         train {{ steps = 12  batch = 4 seqs  log_every = 4 steps }}\neval {{ every = 6 steps  batches = 1 }}\n"
    );
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn run_trains_logs_and_sample_continues_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("corpus.txt"),
        "hello world, hello cllm. ".repeat(40),
    )
    .unwrap();
    let spec = write_spec(
        dir.path(),
        "source = text(\"corpus.txt\")",
        "context = 16 tokens  width = 16  layers = 1  heads = 2",
    );
    let out_dir = dir.path().join("run");
    let out = cllm(&["run", &spec, "--out", out_dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("step      4/12  loss "), "{stdout}");
    assert!(stdout.contains("eval     12  val_loss "), "{stdout}");
    assert!(stdout.contains("done: 12 steps"), "{stdout}");

    let out = cllm(&[
        "sample",
        out_dir.to_str().unwrap(),
        "--prompt",
        "hello",
        "--tokens",
        "10",
        "--seed",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sample = text(&out.stdout);
    assert!(sample.starts_with("hello") && sample.len() > 5, "{sample}");

    // `--set` works on the run's stored spec, as for the other subcommands.
    let run_dir = out_dir.to_str().unwrap();
    let set = |key: &str| cllm(&["sample", run_dir, "--set", key, "--set", "sample.tokens=3"]);
    let out = set("sample.prompt=\"world\"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Bytes: the prompt, three byte tokens, a newline.
    let bytes = &out.stdout;
    assert!(bytes.starts_with(b"world") && bytes.len() == 9, "{bytes:?}");
    let out = set("sample.tokenz=3");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown key `tokenz`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn word_vocabularies_train_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("corpus.txt"),
        "the cat sat on the mat and the dog sat too. ".repeat(30),
    )
    .unwrap();
    let spec = write_spec(
        dir.path(),
        "source = text(\"corpus.txt\")",
        "vocab = words(size = 260)  context = 8 tokens  width = 16  layers = 1  heads = 2",
    );
    let out_dir = dir.path().join("run");
    let out = cllm(&["run", &spec, "--out", out_dir.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cllm(&[
        "sample",
        out_dir.to_str().unwrap(),
        "--prompt",
        "the cat",
        "--tokens",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("the cat"));
}

#[test]
fn bad_data_is_a_clear_error_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "empty.txt",
            "",
            "context = 8 tokens  width = 16  heads = 2",
            "is empty",
        ),
        (
            "short.txt",
            "too short",
            "context = 64 tokens  width = 16  heads = 2",
            "the training split has 9 tokens",
        ),
        (
            "words.txt",
            "one two three two one",
            "vocab = words(size = 300)  context = 2 tokens  width = 16  heads = 2",
            "needs 44 distinct words",
        ),
    ];
    for (file, contents, model, expected) in cases {
        std::fs::write(dir.path().join(file), contents).unwrap();
        let spec = write_spec(
            dir.path(),
            &format!("source = text(\"{file}\")  val_split = 0%"),
            model,
        );
        let out = cllm(&[
            "run",
            &spec,
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(expected),
            "{file}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn sampling_a_missing_checkpoint_is_a_clear_error() {
    let out = cllm(&["sample", "runs/there-is-no-such-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

/// Rewrites `from` to `to` (the same length) in the checkpoint's header, where the
/// resolved spec is stored as JSON: a tampered or corrupted stored spec.
fn tamper(checkpoint: &Path, from: &str, to: &str) {
    assert_eq!(
        from.len(),
        to.len(),
        "an in-place edit keeps the header's length"
    );
    let mut bytes = std::fs::read(checkpoint).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = String::from_utf8(bytes[8..8 + header].to_vec()).unwrap();
    assert!(text.contains(from), "the stored spec has {from}: {text}");
    bytes[8..8 + header].copy_from_slice(text.replacen(from, to, 1).as_bytes());
    std::fs::write(checkpoint, bytes).unwrap();
}

#[test]
fn sampling_checks_the_stored_spec_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corpus.txt"), "abcabc ".repeat(40)).unwrap();
    let spec = write_spec(
        dir.path(),
        "source = text(\"corpus.txt\")",
        "context = 16 tokens  width = 16  layers = 1  heads = 2",
    );
    let run_dir = dir.path().join("run");
    let run_dir = run_dir.to_str().unwrap();
    assert!(
        cllm(&["run", &spec, "--out", run_dir, "--steps", "1"])
            .status
            .success()
    );
    for flag in ["NaN", "inf", "-1"] {
        let flag = format!("--temperature={flag}");
        let out = cllm(&["sample", run_dir, &flag, "--tokens", "2"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--temperature {flag}: {stderr}");
        assert!(stderr.contains("--temperature"), "{stderr}");
    }
    // Quoted keys, so the edit hits the stored spec and nothing else.
    let checkpoint = Path::new(run_dir).join("checkpoint.safetensors");
    for (from, to, says) in [
        (r#"\"heads\":2"#, r#"\"heads\":0"#, "heads"),
        (r#"\"heads\":2"#, r#"\"heads\":3"#, "heads"),
        (r#"\"layers\":1"#, r#"\"layers\":0"#, "layers"),
    ] {
        let copy = dir.path().join("tampered.safetensors");
        std::fs::copy(&checkpoint, &copy).unwrap();
        tamper(&copy, from, to);
        let out = cllm(&["sample", copy.to_str().unwrap(), "--tokens", "2"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{to}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("stored"),
            "{to}: {stderr}"
        );
    }
}

#[test]
fn step_lines_carry_mfu_and_a_warm_up_longer_than_the_run_is_warned() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run").display().to_string();
    let out = cllm(&[
        "run",
        "specs/add.cllm",
        "--steps",
        "20",
        "--out",
        &out_dir,
        "--set",
        "train.log_every=10",
        "--set",
        "data.source=addition(digits = 2, held_out = 20)",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains(" GFLOP a step"), "{stdout}");
    let step = stdout
        .lines()
        .find(|l| l.starts_with("step "))
        .expect("a step line");
    assert!(step.contains("MFU ") && step.ends_with('%'), "{step}");
    assert!(
        stdout.contains("wall ") && stdout.contains("tok/s, MFU"),
        "{stdout}"
    );
    // add.cllm warms up for 100 steps: 20 never reach the peak learning rate.
    assert!(
        stderr.contains("warning: the schedule's warm-up (100 steps)"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_suggests_the_closest_name_in_its_folder() {
    let out = cllm(&[
        "check",
        "specs/shakespeare.cllm",
        "--set",
        "data.source=text(\"data/tinyshakspeare.txt\")",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("did you mean `data/tinyshakespeare.txt`?"),
        "{stderr}"
    );
    let out = cllm(&[
        "check",
        "specs/shakespeare.cllm",
        "--set",
        "model.weights=\"data/tinyshakespear.txt\"",
    ]);
    assert!(
        text(&out.stderr).contains("did you mean `data/tinyshakespeare.txt`?"),
        "{}",
        text(&out.stderr)
    );
}

/// `CLLM_ISA` with a name no kernel level has is refused before any work (the kernels
/// would ignore it and run the widest path under the name asked for); a level this CPU
/// runs is taken without a word.
#[test]
fn an_unknown_kernel_level_in_cllm_isa_is_refused() {
    let run = |isa: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cllm"))
            .args(["check", "specs/add.cllm"])
            .env("CLLM_ISA", isa)
            .output()
            .unwrap()
    };
    let typo = run("avx512-bf16");
    let stderr = text(&typo.stderr);
    assert_eq!(typo.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CLLM_ISA=`avx512-bf16` names no kernel level")
            && stderr.contains("avx512bf16, amx"),
        "{stderr}"
    );
    for known in ["portable", " Portable ", ""] {
        let out = run(known);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{known:?}: {stderr}");
        assert!(!stderr.contains("CLLM_ISA"), "{known:?}: {stderr}");
    }
}

#[test]
fn a_rayon_thread_count_past_the_limit_is_refused_at_once() {
    let run = |threads: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cllm"))
            .args(args)
            .env("RAYON_NUM_THREADS", threads)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // 100 000 spun for eleven minutes starting threads, then aborted; 5 000 (past the
    // limit, yet quick to start) keeps this test fast should the check go.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = ["run", "specs/add.cllm", "--steps", "2", "--quiet", "--out"];
    let args = [&args[..], &[out.to_str().unwrap()]].concat();
    let refused = run("5000", &args);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RAYON_NUM_THREADS=5000: cllm runs at most 1024"),
        "{stderr}"
    );
    assert!(!out.exists(), "refused before the run folder");
    // Rayon's own meanings stay: 0 and a non-number are its default.
    for threads in ["1024", "0", "many"] {
        let ok = run(threads, &["check", "specs/add.cllm"]);
        assert!(ok.status.success(), "{threads}: {}", text(&ok.stderr));
    }
}

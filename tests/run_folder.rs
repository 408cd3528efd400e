//! A run folder nothing can break (issue 24): one writer at a time, no fresh run over a
//! run, never a write through a planted link or into a FIFO, SIGTERM and SIGHUP save
//! and stop like Ctrl-C, and a checkpoint that was damaged or holds NaN is refused.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cllm::checkpoint;

const CLLM: &str = env!("CARGO_BIN_EXE_cllm");

/// `cllm args…`: (exit code, stdout, stderr), failing the test past 60 s.
fn cllm(args: &[&str]) -> (Option<i32>, String, String) {
    let child = Command::new(CLLM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, args)
}

fn finish(mut child: Child, what: &[&str]) -> (Option<i32>, String, String) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("cllm {what:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), flat(&text(out.stderr)))
}

/// A diagnostic as one line: miette wraps its text at 80 columns behind `│`.
fn flat(text: &str) -> String {
    text.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A short run of the addition task into `dir`.
fn short_run(dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "run",
        "specs/add.cllm",
        "--steps",
        "6",
        "--quiet",
        "--out",
        dir,
    ];
    args.extend(extra);
    cllm(&args)
}

/// Every file of `dir` whose name marks a temporary file.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn a_fresh_run_into_a_folder_holding_a_run_is_refused_unless_overwrite() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let (code, _, stderr) = short_run(&dir, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let trained = std::fs::read(dir.join(checkpoint::FILE_NAME)).unwrap();
    let (code, _, stderr) = short_run(&dir, &["--set", "train.seed=7"]);
    assert_eq!(code, Some(1), "{stderr}");
    for says in ["already holds a run", "--resume", "--overwrite"] {
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    assert_eq!(
        std::fs::read(dir.join(checkpoint::FILE_NAME)).unwrap(),
        trained,
        "the refused run left the trained checkpoint as it was"
    );
    let (code, _, stderr) = short_run(&dir, &["--set", "train.seed=7", "--overwrite"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_ne!(
        std::fs::read(dir.join(checkpoint::FILE_NAME)).unwrap(),
        trained
    );
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
}

/// A child process killed when dropped: a failed assertion must not leave a run of a
/// million steps behind.
struct Running(Option<Child>);

impl Running {
    fn id(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    fn take(mut self) -> Child {
        self.0.take().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A run of the addition task that goes on until stopped, writing into `dir`.
fn long_run(dir: &Path) -> Running {
    let child = Command::new(CLLM)
        .args(["run", "specs/add.cllm", "--steps", "1000000", "--quiet"])
        .args([
            "--set",
            "checkpoint.every=1000000",
            "--set",
            "eval.every=1000000",
        ])
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Running(Some(child))
}

/// Waits until the run in `dir` has logged a training row (it is past its set-up).
fn wait_until_training(dir: &Path) {
    let started = Instant::now();
    while std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(true, |t| t.is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no row in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_writer_is_refused_and_sigterm_or_sighup_save_and_stop() {
    let root = tempfile::tempdir().unwrap();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let dir = root.path().join(name);
        let first = long_run(&dir);
        wait_until_training(&dir);
        let (code, _, stderr) = short_run(&dir, &["--overwrite"]);
        assert_eq!(code, Some(1), "{stderr}");
        let holder = format!("in use by another cllm process (pid {})", first.id());
        assert!(stderr.contains(&holder), "{stderr}");
        // SAFETY: kill(2) on the child this test started.
        assert_eq!(unsafe { libc::kill(first.id() as i32, signal) }, 0);
        let (code, stdout, stderr) = finish(first.take(), &[name]);
        assert_eq!(code, Some(130), "{name}: {stdout}{stderr}");
        assert!(
            stdout.contains("resume with: cllm run --resume"),
            "{stdout}"
        );
        let stored = checkpoint::load(&dir.join(checkpoint::FILE_NAME)).unwrap();
        let step: u64 = stored.metadata["step"].parse().unwrap();
        assert!(step >= 1, "{name}: saved at step {step}");
        assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    }
}

#[test]
fn links_and_fifos_in_a_run_folder_are_never_written_through() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let (code, _, stderr) = short_run(&dir, &["--stop-at", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    // Links planted where cllm writes: the old fixed temporary name, and the plots.
    let victim = root.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    for name in ["checkpoint.safetensors.tmp", "loss.svg", "loss.png"] {
        let _ = std::fs::remove_file(dir.join(name));
        std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
    }
    let (code, _, stderr) = cllm(&["run", "--resume", dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    for name in ["loss.svg", "loss.png"] {
        let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is a file of its own now");
    }
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));

    // metrics.jsonl as a FIFO, or a link to /dev/zero: refused at once, never read.
    let (code, _, stderr) = short_run(&root.path().join("again"), &["--stop-at", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let metrics = root.path().join("again/metrics.jsonl");
    for (make, says) in [("fifo", "not a regular file"), ("link", "symbolic link")] {
        let _ = std::fs::remove_file(&metrics);
        match make {
            "fifo" => assert!(
                Command::new("mkfifo")
                    .arg(&metrics)
                    .status()
                    .unwrap()
                    .success()
            ),
            _ => std::os::unix::fs::symlink("/dev/zero", &metrics).unwrap(),
        }
        let started = Instant::now();
        let again = root.path().join("again");
        let (code, _, stderr) = cllm(&["run", "--resume", again.to_str().unwrap(), "--quiet"]);
        assert_eq!(code, Some(1), "{make}: {stderr}");
        assert!(
            stderr.contains("metrics.jsonl") && stderr.contains(says),
            "{stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{make}: slow");
    }
}

/// The tensor data of the safetensors file at `path` starts here.
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn a_damaged_or_non_finite_checkpoint_is_refused_naming_the_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let (code, _, stderr) = short_run(&dir, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let file = dir.join(checkpoint::FILE_NAME);
    let good = std::fs::read(&file).unwrap();
    let run = dir.to_str().unwrap();

    // One flipped bit in the tensor data: the checksum names the tensor.
    let mut flipped = good.clone();
    let at = data_start(&good) + 1000;
    flipped[at] ^= 0x10;
    std::fs::write(&file, &flipped).unwrap();
    for command in [
        vec!["eval", run],
        vec!["sample", run],
        vec!["run", "--resume", run],
    ] {
        let (code, _, stderr) = cllm(&command);
        assert_eq!(code, Some(1), "{command:?}: {stderr}");
        assert!(stderr.contains("is corrupt at tensor"), "{stderr}");
    }

    // All NaN, written without checksums (as another tool would): refused on load and
    // on export, naming the tensor.
    std::fs::write(&file, &good).unwrap();
    let stored = checkpoint::load(&file).unwrap();
    let nan: Vec<(String, Vec<usize>, Vec<u8>)> = stored
        .tensors
        .iter()
        .map(|(name, (shape, values))| {
            let bytes = values.iter().flat_map(|_| f32::NAN.to_le_bytes()).collect();
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let views = nan.iter().map(|(name, shape, bytes)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes);
        (name.clone(), view.unwrap())
    });
    let mut metadata = stored.metadata.clone();
    metadata.remove("crc32");
    std::fs::write(
        &file,
        safetensors::serialize(views, Some(metadata)).unwrap(),
    )
    .unwrap();
    let hf = root.path().join("hf");
    for command in [
        vec!["eval", run],
        vec!["sample", run],
        vec!["export", run, "--hf", hf.to_str().unwrap()],
    ] {
        let (code, _, stderr) = cllm(&command);
        assert_eq!(code, Some(1), "{command:?}: {stderr}");
        assert!(stderr.contains("holds NaN or infinite values"), "{stderr}");
    }
    assert!(!hf.join("model.safetensors").exists());

    // A checkpoint without checksums (older cllm) still loads.
    let mut metadata = checkpoint::parse(&file, &good).unwrap().metadata;
    metadata.remove("crc32");
    let old = checkpoint::parse(&file, &good).unwrap();
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = old
        .tensors
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = raw.iter().map(|(n, s, b)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
        (n.clone(), view.unwrap())
    });
    std::fs::write(
        &file,
        safetensors::serialize(views, Some(metadata)).unwrap(),
    )
    .unwrap();
    let (code, stdout, stderr) = cllm(&["eval", run]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("val_loss") || stderr.contains("val_loss"),
        "{stdout}{stderr}"
    );
}

/// `--out` as a file or as a link to nothing is refused saying which (the link's
/// target named), not with the system's "File exists"; a link to a folder is followed.
#[test]
fn an_out_that_is_a_file_or_a_dangling_link_is_refused_saying_which() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let dangling = root.path().join("dangling");
    std::os::unix::fs::symlink(root.path().join("gone"), &dangling).unwrap();
    for (out, says) in [
        (&file, "it is a file, not a folder".to_string()),
        (
            &dangling,
            format!("symbolic link to `{}`", root.path().join("gone").display()),
        ),
    ] {
        let (code, _, stderr) = short_run(out, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        let stderr = flat(&stderr);
        assert!(stderr.contains(&flat(&says)), "{stderr}");
        assert!(!stderr.contains("File exists"), "{stderr}");
    }
    assert!(
        !root.path().join("gone").exists(),
        "nothing created through the link"
    );
    let folder = root.path().join("elsewhere");
    std::fs::create_dir(&folder).unwrap();
    let linked = root.path().join("linked");
    std::os::unix::fs::symlink(&folder, &linked).unwrap();
    let (code, _, stderr) = short_run(&linked, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(folder.join("checkpoint.safetensors").is_file());
}

#[test]
fn what_a_killed_writer_left_is_removed_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let (code, _, stderr) = short_run(&dir, &["--stop-at", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    // A SIGKILL mid-save leaves write_atomic's hidden temporary; a user's own stays.
    let left = ".checkpoint.safetensors.tmp.4242.0";
    let foreign = ".notes.txt.tmp.4242.0";
    for name in [left, foreign] {
        std::fs::write(dir.join(name), b"x").unwrap();
    }
    let (code, _, stderr) = cllm(&["run", "--resume", dir.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!dir.join(left).exists());
    assert!(dir.join(foreign).exists());
}

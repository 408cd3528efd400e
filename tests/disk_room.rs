//! A run that could not save its checkpoints is refused before its first step, naming
//! the free and the needed space — not hours later with "no space left on device".
//!
//! The small disk is a 4 MiB tmpfs mounted in a mount namespace of the test's own
//! (`unshare -rm`: user namespaces, or root as CI is); where that is not allowed the
//! test says so and does nothing.

use std::path::Path;
use std::process::Command;

/// `cllm run spec --out DIR/run …` with DIR a 4 MiB tmpfs: (exit code, stderr).
fn run_on_small_disk(dir: &Path, spec: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let script = r#"mount -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@""#;
    let run = dir.join("run");
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_cllm"))
        .args(["run", spec.to_str().unwrap(), "--quiet", "--out"])
        .arg(&run)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace('│', " ");
    let stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    (out.status.code(), stderr)
}

/// Whether this process may mount a tmpfs on `dir` in a namespace of its own.
fn small_disks_allowed(dir: &Path) -> bool {
    Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            r#"mount -t tmpfs -o size=1m tmpfs "$1""#,
            "sh",
        ])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_run_whose_checkpoints_cannot_fit_is_refused_before_training() {
    let root = tempfile::tempdir().unwrap();
    if !small_disks_allowed(root.path()) {
        eprintln!("skipped: no tmpfs in a namespace of our own here (`unshare -rm`)");
        return;
    }
    std::fs::write(
        root.path().join("corpus.txt"),
        "to be or not to be. ".repeat(400),
    )
    .unwrap();
    let spec = root.path().join("spec.cllm");
    let write_spec = |width: u32| {
        std::fs::write(
            &spec,
            format!(
                "cllm 0.1\ndata {{ source = text(\"corpus.txt\") }}\n\
                 model gpt {{ context = 16 tokens  width = {width}  layers = 4  heads = 2 }}\n\
                 train {{ steps = 4  batch = 2 seqs }}\ncheckpoint {{ every = 2 steps }}\n"
            ),
        )
        .unwrap()
    };
    let disk = root.path().join("disk");
    std::fs::create_dir(&disk).unwrap();

    // Width 128, four layers: ~0.8 M parameters, a 9.6 MiB checkpoint on a 4 MiB disk.
    write_spec(128);
    let (code, stderr) = run_on_small_disk(&disk, &spec, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("free; this run needs") && stderr.contains("a checkpoint is 9."),
        "{stderr}"
    );
    assert!(
        !stderr.contains("step"),
        "refused before any step: {stderr}"
    );

    // Width 48: a 1.3 MiB checkpoint, saved at step 2 and again over it at step 4 —
    // two at once plus the slack fit in 4 MiB.
    write_spec(48);
    let (code, stderr) = run_on_small_disk(&disk, &spec, &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

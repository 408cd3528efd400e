//! MPI ranks (`--features mpi`; needs `mpiexec` from MPICH or Open MPI): the same run
//! on 1 process × 1 or 2 threads and on 1, 2, 4 and 8 ranks (oversubscribed) gives the
//! same parameters and moments bit for bit; a rank count that does not split the
//! shards is refused; a 4-rank checkpoint resumes on 1 process and on 2 ranks bit for
//! bit; a killed rank leaves the last checkpoint loadable.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cllm::checkpoint;

mod common;
use common::checkpoint_bits as state;

const CLLM: &str = env!("CARGO_BIN_EXE_cllm");

/// One MPI job at a time: concurrent `mpiexec` jobs on this 2-core machine lost their
/// ranks' output and exit codes now and then (2 of 16 runs), which no user does.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cargo links `target/release/cllm` to the binary of the last build that changed it:
/// after a build without the feature, that is a binary without MPI, whose ranks would
/// each train alone. Say so instead of failing obscurely.
fn built_with_mpi() {
    let version = Command::new(CLLM).arg("--version").output().unwrap().stdout;
    assert!(
        String::from_utf8_lossy(&version).contains("mpi"),
        "{CLLM} was built without the `mpi` feature: run `cargo build --release --features mpi`, then the tests again"
    );
}

fn run(ranks: Option<usize>, args: &[&str]) -> Output {
    built_with_mpi();
    let mut command = match ranks {
        Some(n) => {
            let mut c = Command::new("mpiexec");
            c.args(["-n", &n.to_string(), CLLM]);
            c
        }
        None => Command::new(CLLM),
    };
    command.args(args).stdin(Stdio::null()).output().unwrap()
}

fn train(ranks: Option<usize>, threads: u64, dir: &Path, extra: &[&str]) -> Output {
    let threads = threads.to_string();
    let mut args = vec![
        "run",
        "specs/bench-xs.cllm",
        "--steps",
        "10",
        "--threads",
        &threads,
        "--quiet",
        "--out",
    ];
    args.push(dir.to_str().unwrap());
    args.extend(extra);
    let out = run(ranks, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn ranks_give_the_single_process_bits() {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);
    train(None, 1, &dir("p1"), &[]);
    train(None, 2, &dir("p2"), &[]);
    let expected = state(&dir("p1"));
    assert_eq!(state(&dir("p2")), expected, "1 and 2 threads");
    for ranks in [1, 2, 4, 8] {
        let name = format!("r{ranks}");
        train(Some(ranks), 1, &dir(&name), &[]);
        assert_eq!(state(&dir(&name)), expected, "{ranks} ranks × 1 thread");
    }
    // Ranks of two workers each: their block's tree above the workers comes first
    // (made part by part while backward runs, or after the step).
    train(Some(2), 2, &dir("r2t2"), &[]);
    assert_eq!(state(&dir("r2t2")), expected, "2 ranks × 2 threads");
    let after = ["--set", "plan.overlap=false"];
    train(Some(2), 2, &dir("r2t2-after"), &after);
    assert_eq!(
        state(&dir("r2t2-after")),
        expected,
        "2 × 2, exchanged after the step"
    );
    // Resume on 1 process and on 2 ranks from a checkpoint 4 ranks wrote at step 5.
    train(Some(4), 1, &dir("half"), &["--stop-at", "5"]);
    for ranks in [None, Some(2)] {
        let copy = dir(&format!("half-then-{ranks:?}"));
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(dir("half")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
        }
        let resume = [
            "run",
            "--resume",
            copy.to_str().unwrap(),
            "--threads",
            "1",
            "--quiet",
        ];
        let resumed = run(ranks, &resume);
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert_eq!(
            state(&copy),
            expected,
            "4 ranks to step 5, then {ranks:?} ranks"
        );
    }
}

/// In bf16 (each rank rounds the gathered weights into its own panels): 2 and 4 ranks
/// end with one process's bf16 bits, which are not fp32's.
#[test]
fn ranks_in_bf16_give_the_single_process_bits() {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);
    let bf16 = ["--set", "train.precision=bf16"];
    train(None, 1, &dir("p1"), &bf16);
    train(None, 1, &dir("fp32"), &[]);
    let expected = state(&dir("p1"));
    assert_ne!(
        state(&dir("fp32")),
        expected,
        "bf16 products left fp32's bits"
    );
    for ranks in [2, 4] {
        let name = format!("r{ranks}");
        train(Some(ranks), 1, &dir(&name), &bf16);
        assert_eq!(state(&dir(&name)), expected, "{ranks} ranks in bf16");
    }
}

/// Pipeline stages over MPI ranks (`plan.stages`, 1F1B): 2 and 4 stages (4 processes
/// oversubscribed), 2 stages of 2 threads each, and 2 stages × 2 replicas give the
/// single process's parameters and moments; a 2-stage checkpoint resumes on 1 process
/// and on 2 stages × 2 replicas.
#[test]
fn stages_give_the_single_process_bits() {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);
    train(None, 1, &dir("p1"), &[]);
    let expected = state(&dir("p1"));
    for (stages, replicas, threads) in [(2, 1, 1), (4, 1, 1), (2, 1, 2), (2, 2, 1)] {
        let name = format!("s{stages}q{replicas}t{threads}");
        let set = format!("plan.stages={stages}");
        train(
            Some(stages * replicas),
            threads,
            &dir(&name),
            &["--set", &set],
        );
        let what = format!("{stages} stages × {replicas} × {threads} thread(s)");
        assert_eq!(state(&dir(&name)), expected, "{what}");
    }
    train(
        Some(2),
        1,
        &dir("half"),
        &["--set", "plan.stages=2", "--stop-at", "5"],
    );
    for ranks in [None, Some(4)] {
        let copy = dir(&format!("half-then-{ranks:?}"));
        common::copy_folder(&dir("half"), &copy);
        let resume = ["run", "--resume", copy.to_str().unwrap(), "--quiet"];
        let resumed = run(ranks, &resume);
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        assert!(resumed.status.success(), "{stderr}");
        let then = format!("2 stages to step 5, then {ranks:?} ranks (2 stages × 2)");
        assert_eq!(state(&copy), expected, "{then}");
    }
}

#[test]
fn a_rank_count_that_does_not_split_the_shards_is_refused() {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let out = run(
        Some(3),
        &[
            "run",
            "specs/bench-xs.cllm",
            "--steps",
            "2",
            "--out",
            root.path().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 ranks cannot split the plan's 8 shards"),
        "{stderr}"
    );
    assert!(stderr.contains("1, 2, 4 or 8"), "{stderr}");
}

/// One `mpiexec` with two command lines (MPMD): rank 0 runs `specs/bench-xs.cllm` into
/// `out`, rank 1 the same with `rank1` added. Waits at most 60 s (a hang fails).
fn two_command_lines(out: &str, rank1: &[&str]) -> (Option<i32>, String) {
    built_with_mpi();
    let line = ["run", "specs/bench-xs.cllm", "--steps", "2", "--out", out];
    let mut job = Command::new("mpiexec")
        .args(["-n", "1", CLLM])
        .args(line)
        .args([":", "-n", "1", CLLM])
        .args(line)
        .args(rank1)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = job.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("the job hangs (60 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

#[test]
fn a_rank_started_with_another_spec_is_refused() {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("mixed");
    // Rank 1 overrides the learning rate. Every rank sees the mismatch in the same
    // exchange, so none aborts: rank 0 prints the reason once, both exit 1. (When a
    // rank aborted instead, the launcher lost the message now and then.)
    let (code, stderr) = two_command_lines(
        out.to_str().unwrap(),
        &["--set", "train.optimizer=adamw(lr = 1e-3)"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let reason = "rank 1 runs another spec, plan or cllm binary than rank 0";
    assert_eq!(stderr.matches(reason).count(), 1, "{stderr}");
    assert!(!stderr.contains("BAD TERMINATION"), "{stderr}");
}

#[test]
fn a_rank_whose_spec_is_refused_stops_every_rank_with_its_reason() {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("refused");
    // Rank 1 fails before it could train (a bad override; a missing file): rank 0
    // must not wait for it in an exchange (it hung before MPI started first).
    for bad in ["model.width=abc", "data.source=text(\"missing.txt\")"] {
        let (code, stderr) = two_command_lines(out.to_str().unwrap(), &["--set", bad]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("rank 1 could not start the run"),
            "{stderr}"
        );
        let reason = if bad.starts_with("model") {
            "expected a number"
        } else {
            "missing.txt"
        };
        assert!(stderr.contains(reason), "{stderr}");
    }
}

#[test]
fn a_killed_rank_leaves_the_last_checkpoint_loadable() {
    kill_a_rank(&[]);
}

/// The same with pipeline stages: a stage that dies ends the job (its neighbour waits
/// on a message that never comes until the launcher ends it), and the checkpoint the
/// stages last wrote survives.
#[test]
fn a_killed_stage_leaves_the_last_checkpoint_loadable() {
    kill_a_rank(&["--set", "plan.stages=2"]);
}

/// Two ranks training with `extra`; one is killed after the first checkpoint.
fn kill_a_rank(extra: &[&str]) {
    let _job = one_job();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("killed");
    built_with_mpi();
    let mut job = Command::new("mpiexec")
        .args([
            "-n",
            "2",
            CLLM,
            "run",
            "specs/bench-xs.cllm",
            "--steps",
            "100000",
        ])
        .args(["--threads", "1", "--quiet", "--set", "checkpoint.every=3"])
        .args(extra)
        .arg("--out")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained while the job runs: a full pipe would stall the launcher.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe.unwrap(), &mut text);
            text
        })
    };
    let out = drain(job.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(job.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    while !dir.join(checkpoint::FILE_NAME).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // The rank processes: `cllm run` whose command line names this run folder.
    let pids = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", &format!("run .*{}", dir.display())])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let victim = pids.lines().last().expect("the ranks are running");
    Command::new("kill").args(["-9", victim]).status().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the other rank hangs"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the job reports the dead rank");
    let said = out.join().unwrap() + &err.join().unwrap();
    // The launcher names the death (MPICH: "Killed (signal 9)"; Open MPI: "exited on
    // signal 9 (Killed)").
    assert!(said.contains("signal 9"), "{said}");
    // The checkpoint is whole: it loads, and training continues from it.
    let resumed = run(
        None,
        &[
            "run",
            "--resume",
            dir.to_str().unwrap(),
            "--steps",
            "100000",
            "--stop-at",
            "0",
            "--quiet",
        ],
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(!stderr.contains("not a readable"), "{stderr}");
    checkpoint::load(&dir.join(checkpoint::FILE_NAME)).expect("the checkpoint loads");
}

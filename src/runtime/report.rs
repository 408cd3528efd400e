//! What a run tells its user: a progress bar on stderr (only on a terminal), a
//! greppable line on stdout every log interval, and metrics.jsonl in the run folder.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// The file of a run's metrics rows, in its folder.
pub const METRICS: &str = "metrics.jsonl";

pub struct Reporter {
    bar: ProgressBar,
    metrics: Option<File>,
    quiet: bool,
    window_start: Instant,
    window_steps: u64,
    /// When the run started (metrics rows carry the seconds since).
    started: Instant,
    /// What a step costs and what the machine can do: MFU is their ratio to the time.
    speed: Speed,
    /// Training time and steps this invocation (evaluation excluded).
    trained_seconds: f64,
    trained_steps: u64,
}

/// A step's FLOPs and the machine's measured FMA peak at its widest vector width on
/// the run's threads (as `cllm bench` measures it).
#[derive(Clone, Copy, Debug)]
pub struct Speed {
    pub step_flops: f64,
    /// What `peak_gflops` is ("512-bit FMA peak", "amx bf16 peak").
    pub peak_name: &'static str,
    pub peak_gflops: f64,
    /// Tokens of one step.
    pub step_tokens: usize,
}

impl Speed {
    /// Percent of the peak a step of `seconds` reaches.
    pub fn mfu(&self, seconds: f64) -> f64 {
        100.0 * self.step_flops / seconds.max(1e-12) / 1e9 / self.peak_gflops.max(1e-9)
    }
}

/// Seconds since the Unix epoch, for metrics rows.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The averages of a run's training time, for its summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Averages {
    pub wall_seconds: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
}

impl Reporter {
    /// `fresh` truncates metrics.jsonl; a resumed run first drops the rows past its
    /// checkpoint's step `start` (logged by the run that was killed after it), then
    /// appends, so each step appears once.
    pub fn new(
        run_dir: &Path,
        start: u64,
        total: u64,
        fresh: bool,
        quiet: bool,
        speed: Speed,
    ) -> std::io::Result<Reporter> {
        std::fs::create_dir_all(run_dir)?;
        if !fresh {
            keep_rows_up_to(&run_dir.join(METRICS), start)?;
        }
        let metrics = crate::files::open_append_regular(&run_dir.join(METRICS), fresh)?;
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
                .expect("the template is valid"),
        );
        bar.set_position(start);
        Ok(Reporter {
            bar,
            metrics: Some(metrics),
            quiet,
            ..Reporter::silent(total, speed)
        })
    }

    /// A reporter that prints and writes nothing (a rank other than 0 of a run split
    /// over ranks: rank 0 speaks for the run).
    pub fn silent(total: u64, speed: Speed) -> Reporter {
        Reporter {
            bar: ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden()),
            metrics: None,
            quiet: true,
            window_start: Instant::now(),
            window_steps: 0,
            started: Instant::now(),
            speed,
            trained_seconds: 0.0,
            trained_steps: 0,
        }
    }

    /// Wall time since the start, and tokens/s and MFU averaged over training time.
    pub fn averages(&self) -> Averages {
        let seconds = self.trained_seconds.max(1e-12);
        let steps = self.trained_steps as f64;
        Averages {
            wall_seconds: self.started.elapsed().as_secs_f64(),
            tokens_per_s: steps * self.speed.step_tokens as f64 / seconds,
            mfu: match self.trained_steps {
                0 => 0.0,
                _ => self.speed.mfu(seconds / steps),
            },
        }
    }

    /// A warning, on stderr (unless quiet), kept clear of the progress bar.
    pub fn warn(&self, line: &str) {
        if !self.quiet {
            self.bar.suspend(|| crate::errln!("warning: {line}"));
        }
    }

    /// Progress of an evaluation, on the bar (a terminal's only).
    pub fn evaluating(&self, done: usize, total: usize) {
        self.bar
            .set_message(format!("evaluating {done}/{total} held-out problems"));
    }

    /// A line for the user (stdout), kept clear of the progress bar.
    pub fn say(&self, line: &str) {
        if !self.quiet {
            self.bar.suspend(|| crate::outln!("{line}"));
        }
    }

    fn record(&mut self, value: serde_json::Value) {
        if let Some(file) = &mut self.metrics
            && writeln!(file, "{value}").is_err()
        {
            self.metrics = None; // a full disk must not stop training; the checkpoint still tries
        }
    }

    /// Called after every step; prints and records every `log_every` steps.
    pub fn step(
        &mut self,
        step: u64,
        total: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        log_every: u64,
    ) {
        self.window_steps += 1;
        self.bar.set_position(step);
        self.bar.set_message(format!("loss {loss:.4}"));
        if !step.is_multiple_of(log_every) && step != total {
            return;
        }
        let seconds = self.window_start.elapsed().as_secs_f64();
        self.trained_seconds += seconds;
        self.trained_steps += self.window_steps;
        let ms = 1e3 * seconds / self.window_steps as f64;
        let tokens = self.speed.step_tokens as f64;
        let tokens_per_s = (tokens * self.window_steps as f64) / seconds.max(1e-9);
        let mfu = self.speed.mfu(ms / 1e3);
        self.say(&format!(
            "step {step:>6}/{total}  loss {loss:.4}  lr {lr:.2e}  grad_norm {grad_norm:.3}  {ms:.1} ms/step  {tokens_per_s:.0} tok/s  MFU {mfu:.1}%"
        ));
        let elapsed = self.started.elapsed().as_secs_f64();
        self.record(json!({"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "ms_per_step": ms, "tokens_per_s": tokens_per_s, "mfu_percent": mfu, "time": wall_clock(), "elapsed_s": elapsed}));
        self.window_start = Instant::now();
        self.window_steps = 0;
    }

    /// Folds the training time since the last line into the run's averages before
    /// something that is not training (an evaluation) runs.
    pub fn pause(&mut self) {
        self.trained_seconds += self.window_start.elapsed().as_secs_f64();
        self.trained_steps += self.window_steps;
        self.window_start = Instant::now();
        self.window_steps = 0;
    }

    /// An evaluation's results.
    pub fn eval(&mut self, step: u64, val_loss: f64, accuracy: Option<(usize, usize)>) {
        let acc_text = accuracy.map_or(String::new(), |(right, n)| {
            format!(
                "  accuracy {:.1}% ({right}/{n})",
                100.0 * right as f64 / n as f64
            )
        });
        self.say(&format!("eval {step:>6}  val_loss {val_loss:.4}{acc_text}"));
        let accuracy = accuracy.map(|(right, n)| right as f64 / n as f64);
        let elapsed = self.started.elapsed().as_secs_f64();
        self.record(json!({"kind": "eval", "step": step, "val_loss": val_loss, "accuracy": accuracy, "time": wall_clock(), "elapsed_s": elapsed}));
        // Evaluation time is not training time.
        self.window_start = Instant::now();
        self.window_steps = 0;
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Rewrites `path` without the rows whose `step` is past `step` (atomically: a
/// temporary file, then rename). Rows that are not JSON with a step are kept. A
/// metrics file that is not a regular file (a FIFO, a link to a device) is refused
/// unread; one larger than 1 GiB too (a million rows are 200 MB).
fn keep_rows_up_to(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // none yet
    };
    if meta.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{METRICS} is a symbolic link; cllm writes a run's files only where they are, never through a link"
            ),
        ));
    }
    let bytes = crate::files::read_regular(path, 1 << 30)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{METRICS}: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    let past = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|row| row.get("step")?.as_u64())
            .is_some_and(|s| s > step)
    };
    if !text.lines().any(past) {
        return Ok(());
    }
    let kept: String = text
        .lines()
        .filter(|line| !past(line))
        .map(|line| format!("{line}\n"))
        .collect();
    crate::files::write_atomic(path, kept.as_bytes())
}

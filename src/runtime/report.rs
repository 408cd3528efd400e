//! What a run tells its user: a progress bar on stderr (only on a terminal), a
//! greppable line on stdout every log interval, and metrics.jsonl in the run folder.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

pub struct Reporter {
    bar: ProgressBar,
    metrics: Option<File>,
    quiet: bool,
    window_start: Instant,
    window_steps: u64,
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
    ) -> std::io::Result<Reporter> {
        std::fs::create_dir_all(run_dir)?;
        if !fresh {
            keep_rows_up_to(&run_dir.join("metrics.jsonl"), start)?;
        }
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(!fresh)
            .write(true)
            .truncate(fresh)
            .open(run_dir.join("metrics.jsonl"))?;
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
            window_start: Instant::now(),
            window_steps: 0,
        })
    }

    /// Progress of an evaluation, on the bar (a terminal's only).
    pub fn evaluating(&self, done: usize, total: usize) {
        self.bar
            .set_message(format!("evaluating {done}/{total} held-out problems"));
    }

    /// A line for the user (stdout), kept clear of the progress bar.
    pub fn say(&self, line: &str) {
        if !self.quiet {
            self.bar.suspend(|| println!("{line}"));
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
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        step: u64,
        total: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens: usize,
        log_every: u64,
    ) {
        self.window_steps += 1;
        self.bar.set_position(step);
        self.bar.set_message(format!("loss {loss:.4}"));
        if !step.is_multiple_of(log_every) && step != total {
            return;
        }
        let seconds = self.window_start.elapsed().as_secs_f64();
        let ms = 1e3 * seconds / self.window_steps as f64;
        let tokens_per_s = (tokens as f64 * self.window_steps as f64) / seconds.max(1e-9);
        self.say(&format!(
            "step {step:>6}/{total}  loss {loss:.4}  lr {lr:.2e}  grad_norm {grad_norm:.3}  {ms:.1} ms/step  {tokens_per_s:.0} tok/s"
        ));
        self.record(json!({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "ms_per_step": ms, "tokens_per_s": tokens_per_s}));
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
        self.record(json!({"step": step, "val_loss": val_loss, "accuracy": accuracy}));
        // Evaluation time is not training time.
        self.window_start = Instant::now();
        self.window_steps = 0;
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Rewrites `path` without the rows whose `step` is past `step` (atomically: a
/// temporary file, then rename). Rows that are not JSON with a step are kept.
fn keep_rows_up_to(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(()); // none yet (or unreadable: appending will say so)
    };
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
    let temporary = path.with_extension("jsonl.tmp");
    std::fs::write(&temporary, kept)?;
    std::fs::rename(&temporary, path)
}

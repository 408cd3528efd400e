//! `cllm eval`: a checkpoint's validation loss and perplexity (and, for the addition
//! task, its exact-match accuracy on the held-out problems), without training.

use std::path::PathBuf;
use std::process::ExitCode;

use cllm::runtime::evaluate_checkpoint;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A run folder (or its checkpoint.safetensors).
    run: PathBuf,
    /// Override a key of the run's stored spec, e.g. `--set eval.batches=100` or
    /// another corpus with `--set 'data.source=text("other.txt")'` (repeatable).
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    overrides: Vec<String>,
    /// Threads (the same as `--set plan.threads=N`; never changes the numbers).
    #[arg(long, value_name = "N")]
    threads: Option<u64>,
}

pub fn eval(args: EvalArgs) -> miette::Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    if let Some(threads) = args.threads {
        overrides.push(format!("plan.threads={threads}"));
    }
    let run = super::stored::open(&args.run)?;
    let (spec, base_dir) = run.with_overrides(&overrides)?;
    let e = evaluate_checkpoint(&spec, &base_dir, &run.file)?;
    let mut line = format!(
        "step {}: val_loss {:.6}, perplexity {:.3} ({} batches of {} × {} tokens)",
        e.step,
        e.val_loss,
        e.val_loss.exp(),
        spec.eval.batches,
        spec.train.micro_batch(),
        spec.model.context
    );
    if let Some((right, n)) = e.accuracy {
        line += &format!(
            ", accuracy {:.1}% ({right}/{n})",
            100.0 * right as f64 / n.max(1) as f64
        );
    }
    cllm::outln!("{line}");
    Ok(ExitCode::SUCCESS)
}

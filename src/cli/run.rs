//! `cllm run`: train the model a spec describes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cllm::runtime::{self, Backend, RunOptions};
use cllm::spec;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The spec to train.
    spec: PathBuf,
    /// Override a key: `--set train.steps=100` (repeatable).
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    overrides: Vec<String>,
    /// Who runs the kernels: `jit` (Cranelift + native GEMM) or `interp` (the reference).
    #[arg(long, default_value = "jit", value_parser = ["interp", "jit"])]
    backend: String,
    /// Train for N steps in all (the same as `--set train.steps=N`).
    #[arg(long, value_name = "N")]
    steps: Option<u64>,
    /// Threads (the same as `--set plan.threads=N`; never changes the numbers).
    #[arg(long, value_name = "N")]
    threads: Option<u64>,
    /// Continue from the checkpoint in this run folder (or .safetensors file).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Save a checkpoint and stop once step K is done, as Ctrl-C would.
    #[arg(long, value_name = "K")]
    stop_at: Option<u64>,
    /// Run folder for the checkpoint and metrics (default: `checkpoint.dir`, else runs/NAME).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print nothing but errors and the final summary.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: RunArgs) -> miette::Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    if let Some(steps) = args.steps {
        overrides.push(format!("train.steps={steps}"));
    }
    if let Some(threads) = args.threads {
        overrides.push(format!("plan.threads={threads}"));
    }
    let spec = spec::load(&args.spec, &overrides)?;
    let base_dir = args.spec.parent().unwrap_or(Path::new(".")).to_path_buf();
    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| match &spec.checkpoint.dir {
            Some(dir) => base_dir.join(dir),
            None => Path::new("runs").join(args.spec.file_stem().unwrap_or_default()),
        });
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    // A second Ctrl-C while saving falls through to the default (the process ends).
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to quit now)"
        );
    });
    let options = RunOptions {
        resume: args.resume.clone(),
        stop_at: args.stop_at,
        quiet: args.quiet,
        interrupt: interrupt.clone(),
        spec_text: spec::to_cllm(&spec, false),
        backend: if args.backend == "jit" {
            Backend::Jit
        } else {
            Backend::Interp
        },
        ..RunOptions::new(run_dir.clone(), base_dir)
    };
    let summary = runtime::train(&spec, &options)?;
    {
        {
            let mut line = format!(
                "done: {} steps, final loss {:.4}",
                summary.steps, summary.final_loss
            );
            if let Some(v) = summary.val_loss {
                line += &format!(", val_loss {v:.4}");
            }
            if let Some((right, n)) = summary.accuracy {
                line += &format!(
                    ", accuracy {:.1}% ({right}/{n})",
                    100.0 * right as f64 / n as f64
                );
            }
            println!("{line}; checkpoint {}", summary.checkpoint.display());
            if interrupt.load(Ordering::Relaxed) {
                println!(
                    "resume with: cllm run {} --resume {}",
                    args.spec.display(),
                    run_dir.display()
                );
                return Ok(ExitCode::from(130));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

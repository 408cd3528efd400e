//! The `cllm` command line: one subcommand per thing a user does with a spec.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The version, with the optional features this binary was built with.
const VERSION: &str = if cfg!(feature = "mpi") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: mpi)")
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Parser)]
#[command(
    name = "cllm",
    version = VERSION,
    about = "Train small GPT-style language models on the CPU from a .cllm spec"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate specs; print each fully resolved (every default filled in).
    Check {
        /// Spec files to check.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Print the resolved spec as .cllm text, with every key documented.
        #[arg(long)]
        resolved: bool,
        /// Print the resolved spec as JSON.
        #[arg(long, conflicts_with = "resolved")]
        json: bool,
        /// Override a key: `--set train.steps=100` (repeatable).
        #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Train the model a spec describes.
    Run(cli::run::RunArgs),
    /// Generate text from a checkpoint.
    Sample(cli::sample::SampleArgs),
    /// Validation loss and perplexity of a checkpoint (and accuracy for addition).
    Eval(cli::eval::EvalArgs),
    /// Tokenize a text or JSON Lines corpus once into llm.c token shards.
    Prepare(cli::prepare::PrepareArgs),
    /// Write a run's model for Hugging Face `transformers` (GPT2LMHeadModel).
    Export(cli::export::ExportArgs),
    /// Draw loss and learning rate against step (SVG and PNG), several runs overlaid.
    Plot(cli::plot::PlotArgs),
    /// Print what the planner decides: kernels, memory arena, keep or recompute, shards.
    Plan(cli::plan::PlanArgs),
    /// Print the Cranelift IR of every kernel.
    Ir(cli::ir::IrArgs),
    /// Measure training-step speed against this machine's measured peak.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    // A command line clap refuses is a user error like any other: exit 1 (help and
    // --version print and exit 0).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    cllm::files::exit_cleanly_on_sigbus();
    // `CLLM_ISA` (the kernel level to cap at, for tests and measurements) is read by
    // the kernels, which ignore a name they do not know: refuse it here instead, and
    // say when a level it names is above what this CPU runs.
    match cllm_kernels::cpu::isa_request() {
        Err(message) => {
            cllm::errln!("error: {message}");
            return ExitCode::FAILURE;
        }
        Ok(Some(note)) => cllm::errln!("warning: {note}"),
        Ok(None) => {}
    }
    if let Err(message) = cli::rayon_threads_request() {
        cllm::errln!("error: {message}");
        return ExitCode::FAILURE;
    }
    // Every subcommand returns `miette::Result<ExitCode>`: its own code (0, or 130 after
    // Ctrl-C, or 1 when `check` has printed several specs' diagnostics), or an error,
    // rendered here the one way and exit 1.
    let outcome = match cli.command {
        Command::Check {
            specs,
            resolved,
            json,
            overrides,
        } => cli::check::check(&specs, resolved, json, &overrides),
        Command::Run(args) => cli::run::run(args),
        Command::Sample(args) => cli::sample::sample(args),
        Command::Eval(args) => cli::eval::eval(args),
        Command::Export(args) => cli::export::export(args),
        Command::Prepare(args) => cli::prepare::prepare_shards(args),
        Command::Plot(args) => cli::plot::plot(args),
        Command::Plan(args) => cli::plan::plan(args),
        Command::Ir(args) => cli::ir::ir(args),
        Command::Bench(args) => cli::bench::bench(args),
    };
    let code = outcome.unwrap_or_else(|error| {
        cllm::errln!("{error:?}");
        ExitCode::FAILURE
    });
    // Output lost to a full disk (not to a reader that went away) fails the command
    // once its work is done: a run has saved its checkpoint by now.
    match cllm::console::lost_output() {
        Some(loss) if code == ExitCode::SUCCESS => {
            cllm::errln!("error: {loss}");
            ExitCode::FAILURE
        }
        _ => code,
    }
}

//! The `cllm` command line: the pipeline's stages, one subcommand each.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cllm::spec;

#[derive(Parser)]
#[command(
    name = "cllm",
    version,
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
    Run(NotYet),
    /// Print what the planner decides: kernels, memory arena, shards.
    Plan(NotYet),
    /// Print the Cranelift IR of every kernel.
    Ir(NotYet),
    /// Generate text from a checkpoint.
    Sample(NotYet),
    /// Measure training-step speed.
    Bench(NotYet),
}

/// Arguments of a subcommand that is not built yet: accepted, then refused plainly.
#[derive(clap::Args)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            specs,
            resolved,
            json,
            overrides,
        } => check(&specs, resolved, json, &overrides),
        Command::Run(_) => not_yet("run", "the reference trainer"),
        Command::Plan(_) => not_yet("plan", "the planner"),
        Command::Ir(_) => not_yet("ir", "the Cranelift JIT"),
        Command::Sample(_) => not_yet("sample", "the reference trainer"),
        Command::Bench(_) => not_yet("bench", "the parallel runtime"),
    }
}

fn not_yet(command: &str, stage: &str) -> ExitCode {
    eprintln!(
        "cllm {command}: not built yet; it arrives with {stage}. `cllm check SPEC` works today."
    );
    ExitCode::from(2)
}

fn check(paths: &[PathBuf], resolved: bool, json: bool, overrides: &[String]) -> ExitCode {
    let mut failed = 0;
    let mut specs = Vec::new();
    for path in paths {
        match spec::load(path, overrides) {
            Ok(spec) => specs.push((path, spec)),
            Err(error) => {
                failed += 1;
                eprintln!("{:?}", miette::Report::new(error));
            }
        }
    }
    for (path, spec) in &specs {
        if json {
            let text = serde_json::to_string_pretty(spec).expect("a Spec always serializes");
            println!("{text}");
        } else if resolved {
            if specs.len() > 1 {
                println!("# {}", path.display());
            }
            print!("{}", spec::to_cllm(spec, true));
        } else {
            println!("{}: ok ({})", path.display(), summary(spec));
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} spec(s) failed to check", paths.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(spec: &spec::Spec) -> String {
    let m = &spec.model;
    format!(
        "gpt, {} layers, width {}, {} heads, context {}, {:.2}M parameters",
        m.layers,
        m.width,
        m.heads,
        m.context,
        m.parameter_count() as f64 / 1e6
    )
}

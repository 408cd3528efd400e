//! `cllm plan`: what the planner decided — kernels, arena, keep or recompute, shards.

use std::path::PathBuf;
use std::process::ExitCode;

use cllm::plan;
use cllm::spec;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The spec to plan.
    spec: PathBuf,
    /// Override a key: `--set plan.memory_budget=64MiB` (repeatable).
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    overrides: Vec<String>,
    /// Print the whole plan as JSON.
    #[arg(long)]
    json: bool,
    /// Print the kernel IR: every kernel's steps, shapes and named argument slots.
    #[arg(long, conflicts_with = "json")]
    kernels: bool,
    /// Also draw buffer lifetimes against kernel order into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also draw the attention pattern (the T×T causal mask, query rows down, key
    /// columns across) into this SVG file.
    #[arg(long, value_name = "FILE")]
    mask_svg: Option<PathBuf>,
}

pub fn plan(args: PlanArgs) -> ExitCode {
    let spec = match spec::load(&args.spec, &args.overrides) {
        Ok(spec) => spec,
        Err(error) => {
            super::report(error);
            return ExitCode::FAILURE;
        }
    };
    let plan = match plan::plan(&spec) {
        Ok(plan) => plan,
        Err(error) => {
            super::report(error);
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.svg
        && let Err(error) = std::fs::write(path, plan::lifetimes_svg(&plan))
    {
        eprintln!("cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if let Some(path) = &args.mask_svg {
        let picture = match &plan.pattern {
            Some(pattern) => cllm::lattice::mask_svg(pattern),
            None => match cllm::lattice::Pattern::new(
                &plan::pattern_kind(&spec.model.attention),
                spec.model.context as usize,
            ) {
                Ok(dense) => cllm::lattice::mask_svg(&dense),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            },
        };
        if let Err(error) = std::fs::write(path, picture) {
            eprintln!("cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if args.kernels {
        print!("{}", plan::kernel_listing(&plan));
        return ExitCode::SUCCESS;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("a Plan serializes")
        );
    } else {
        print!(
            "{}",
            plan::describe(&args.spec.display().to_string(), &spec, &plan)
        );
    }
    ExitCode::SUCCESS
}

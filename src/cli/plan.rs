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
    /// Print the split over R MPI ranks: each rank's shards, the bytes it sends a step,
    /// and the cost model's step time and scaling efficiency for 1…64 ranks.
    #[arg(long, value_name = "R")]
    ranks: Option<usize>,
    /// Plan for N threads (`plan.threads`) and print the predicted step time and
    /// parallel efficiency on 1…128 threads of one process (docs/scaling.md).
    #[arg(long, value_name = "N")]
    threads: Option<u64>,
    /// Print how the layers cut into P pipeline stages (the cut `plan.stages = P` runs):
    /// each stage's blocks, parameters, own arena, what it holds, its time and what it
    /// sends per micro-batch, the 1F1B bubble, and the predicted step against P
    /// data-parallel ranks.
    #[arg(long, value_name = "P", conflicts_with = "ranks")]
    stages: Option<usize>,
    /// The network of the cost model: bandwidth,latency.
    #[arg(long, value_name = "BANDWIDTH,LATENCY", default_value = "10Gbit,50us")]
    network: String,
    /// One process's FLOP rate on this step for the cost model, GFLOP/s (default: 60%
    /// of the FMA peak measured now on `plan.threads`; `cllm bench` measures the real one).
    #[arg(long, value_name = "G")]
    gflops: Option<f64>,
}

pub fn plan(args: PlanArgs) -> miette::Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    if let Some(n) = args.threads {
        overrides.push(format!("plan.threads={n}"));
    }
    let spec = spec::load(&args.spec, &overrides)?;
    let plan = plan::plan(&spec)?;
    if let Some(path) = &args.svg {
        std::fs::write(path, plan::lifetimes_svg(&plan))
            .map_err(|error| miette::miette!("cannot write {}: {error}", path.display()))?;
        cllm::errln!("wrote the arena's buffer lifetimes to {}", path.display());
    }
    if let Some(path) = &args.mask_svg {
        let picture = match &plan.pattern {
            Some(pattern) => cllm::lattice::mask_svg(pattern),
            None => {
                let kind = plan::pattern_kind(&spec.model.attention);
                let dense = cllm::lattice::Pattern::new(&kind, spec.model.context as usize)
                    .map_err(|error| miette::miette!("{error}"))?;
                cllm::lattice::mask_svg(&dense)
            }
        };
        std::fs::write(path, picture)
            .map_err(|error| miette::miette!("cannot write {}: {error}", path.display()))?;
        cllm::errln!("wrote the attention mask to {}", path.display());
    }
    if let Some(ranks) = args.ranks {
        cllm::out!(
            "{}",
            super::scaling::report(&spec, &plan, ranks, &args.network, args.gflops)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(stages) = args.stages {
        cllm::out!(
            "{}",
            super::stages::report(&spec, &plan, stages, &args.network, args.gflops)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.kernels {
        cllm::out!("{}", plan::kernel_listing(&plan));
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        cllm::outln!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("a Plan serializes")
        );
    } else {
        cllm::out!(
            "{}",
            plan::describe(&args.spec.display().to_string(), &spec, &plan)
        );
    }
    if args.threads.is_some() {
        cllm::out!(
            "{}",
            super::scaling::threads_report(&spec, &plan, args.gflops)?
        );
    }
    Ok(ExitCode::SUCCESS)
}

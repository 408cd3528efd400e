//! `cllm plot`: loss and learning-rate curves of one run or several, overlaid.

use std::path::PathBuf;
use std::process::ExitCode;

use cllm::plot::{Curves, LossAxis, draw, read_curves};

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run folders (each with the metrics.jsonl `cllm run` writes).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write: OUT.svg and OUT.png, or OUT/loss.svg and .png when OUT is a
    /// folder (default: RUN_DIR/loss for one run, ./loss for several).
    #[arg(long, value_name = "OUT")]
    out: Option<PathBuf>,
    /// Draw the loss on a logarithmic axis (the late part of a run stays readable).
    #[arg(long)]
    log: bool,
}

pub fn plot(args: PlotArgs) -> miette::Result<ExitCode> {
    let runs: Vec<Curves> = (args.runs.iter())
        .map(|dir| read_curves(dir))
        .collect::<Result<_, _>>()?;
    let stem = match &args.out {
        // `--out figures/` (or a folder that exists) means a file in it, not `figures.svg`.
        Some(out) if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') => {
            out.join("loss")
        }
        Some(out) => out.clone(),
        None => match args.runs.as_slice() {
            [one] => one.join("loss"),
            _ => PathBuf::from("loss"),
        },
    };
    for run in &runs {
        if run.clipped > 0 {
            cllm::errln!(
                "warning: {}: {} value(s) beyond ±{:e} are not drawn",
                run.name,
                run.clipped,
                cllm::plot::PLOTTED
            );
        }
    }
    let axis = if args.log {
        LossAxis::Log
    } else {
        LossAxis::Linear
    };
    let [svg, png] = draw(&runs, &stem, axis)?;
    cllm::errln!("wrote {} and {}", svg.display(), png.display());
    Ok(ExitCode::SUCCESS)
}

//! `cllm run`: train the model a spec describes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cllm::checkpoint;
use cllm::runtime::{self, Backend, RunOptions};
use cllm::spec::{self, Spec};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The spec to train (with `--resume`, optional: the run's own spec is stored in
    /// its checkpoint).
    #[arg(required_unless_present = "resume")]
    spec: Option<PathBuf>,
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
    /// Continue the run in this folder (or from this .safetensors file) exactly: its
    /// stored spec, with every override it was started with, into the same folder.
    /// A spec or `--set` may change only the keys that leave the run a continuation.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Save a checkpoint and stop once step K is done, as Ctrl-C would.
    #[arg(long, value_name = "K")]
    stop_at: Option<u64>,
    /// Run folder for the checkpoint and metrics (default: `checkpoint.dir`, else runs/NAME).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Start over in a run folder that holds a run: its checkpoint, metrics and plots
    /// are deleted first (without it, such a folder is refused).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// With --resume: continue even though the training data changed since the
    /// checkpoint (refused otherwise: the run would no longer be exact).
    #[arg(long, requires = "resume")]
    allow_data_change: bool,
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
    // MPI first: a rank whose spec is refused must still meet the others in an
    // exchange, or they would wait for it forever.
    let ranks = ranks()?;
    let target = match (&args.resume, &args.spec) {
        (Some(resume), _) => resumed(resume, args.spec.as_deref(), &overrides, &args.out),
        (None, Some(path)) => fresh(path, &overrides, &args.out),
        (None, None) => Err(miette::miette!("give a spec to run, or --resume RUN_DIR")),
    };
    let Target {
        spec,
        base_dir,
        run_dir,
    } = match agree_on_target(target, &ranks) {
        Ok(target) => target,
        Err(stop) => return stop,
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    stop_on_signals(interrupt.clone());
    let follower = ranks.as_ref().is_some_and(|r| r.rank() != 0);
    let options = RunOptions {
        ranks: ranks.clone(),
        resume: args.resume.as_deref().map(checkpoint::locate),
        overwrite: args.overwrite,
        allow_data_change: args.allow_data_change,
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
    let summary = match runtime::train(&spec, &options) {
        Ok(summary) => summary,
        Err(error) => return on_every_rank(error, ranks),
    };
    if follower {
        // Rank 0 speaks for the run (and wrote its checkpoint).
        return Ok(ExitCode::SUCCESS);
    }
    if summary.losses.is_empty() {
        // Stopped before its first step (`--stop-at` at or below the checkpoint's step):
        // no loss, no speed to report.
        cllm::outln!(
            "no step trained in this invocation: the run stands at step {}; checkpoint {}",
            summary.steps,
            summary.checkpoint.display()
        );
    } else {
        let mut line = format!(
            "done: {} step{}, final loss {:.4}",
            summary.steps,
            if summary.steps == 1 { "" } else { "s" },
            summary.final_loss
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
        cllm::outln!("{line}; checkpoint {}", summary.checkpoint.display());
        let a = summary.averages;
        cllm::outln!(
            "wall {:.1} s; training at {:.0} tok/s, MFU {:.1}% (averaged over this invocation's steps)",
            a.wall_seconds,
            a.tokens_per_s,
            a.mfu
        );
        if a.mfu > 100.0 {
            // The peak is measured at the start: another process on the cores then
            // lowers it, and the ratio above means nothing.
            cllm::errln!(
                "warning: an MFU above 100% means this machine's peak was measured while \
                 something else used its cores; measure on a quiet machine to compare"
            );
        }
    }
    if let (Some(seconds), Some(ranks)) = (summary.exchange_seconds, &ranks) {
        let sent = summary.exchange_bytes.unwrap_or(0) as f64 / (1u64 << 20) as f64;
        let steps = summary.losses.len().max(1) as f64;
        let share = 100.0 * seconds / summary.averages.wall_seconds.max(1e-9);
        match spec.plan.stages {
            1 => cllm::outln!(
                "{} ranks: {seconds:.2} s in the exchange (waiting for the slowest rank included), \
                 {share:.1}% of the wall time; this rank sent {sent:.1} MiB, {:.2} MiB per step",
                ranks.ranks(),
                sent / steps
            ),
            stages => cllm::outln!(
                "{stages} pipeline stages: this stage waited {seconds:.2} s for the others' \
                 activations, gradients and the step's gathers (the bubble included), \
                 {share:.1}% of the wall time; it sent {sent:.1} MiB, {:.2} MiB per step",
                sent / steps
            ),
        }
        if let Some((wait, overlapped)) = summary.all_to_all_wait {
            let how = match overlapped {
                true => "sent piece by piece while backward ran (plan.overlap)",
                false => "after the step",
            };
            cllm::outln!(
                "  of which the gradient all-to-all kept this rank waiting {:.1} ms a step: {how}",
                1e3 * wait / steps
            );
        }
    }
    draw_curves(&run_dir);
    if summary.stopped_early {
        // The checkpoint holds the resolved spec with every override: the
        // folder alone continues this run.
        cllm::outln!("resume with: cllm run --resume {}", run_dir.display());
    }
    if interrupt.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, SIGTERM and SIGHUP (what a batch scheduler, `docker stop` and a closed
/// terminal send) finish the step, save a checkpoint and stop: exit 130. A second
/// signal quits at once (exit 1, saying the last checkpoint written is kept) — unless
/// a checkpoint is being written: then it is left to finish, and the run stops after.
fn stop_on_signals(interrupt: Arc<AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if !interrupt.swap(true, Ordering::SeqCst) {
            cllm::errln!(
                "\ninterrupted: finishing this step and saving a checkpoint (again to quit without saving)"
            );
        } else {
            let words = "\nstopped without saving: the run folder keeps the last checkpoint written, if any\n";
            if !cllm::files::exit_between_writes(1, words) {
                cllm::errln!("a checkpoint is being written: stopping once it is on disk");
            }
        }
    });
}

/// The run's loss curves as `loss.svg` and `loss.png` in its folder (`cllm plot`'s
/// picture); a run too short to have logged a row gets none. A picture that cannot be
/// drawn is a warning: the run itself succeeded.
fn draw_curves(run_dir: &std::path::Path) {
    let curves = match cllm::plot::read_curves(run_dir) {
        Ok(curves) => curves,
        Err(cllm::plot::PlotError::Empty { .. }) => return,
        Err(e) => return cllm::errln!("warning: no loss plot: {e}"),
    };
    match cllm::plot::draw(
        &[curves],
        &run_dir.join("loss"),
        cllm::plot::LossAxis::Linear,
    ) {
        Ok([svg, _]) => cllm::outln!("loss curves: {} (and .png)", svg.display()),
        Err(e) => cllm::errln!("warning: no loss plot: {e}"),
    }
}

/// What a run trains and where.
struct Target {
    spec: Spec,
    /// The spec's folder: its relative paths start there.
    base_dir: PathBuf,
    run_dir: PathBuf,
}

/// A new run of the spec at `path`.
fn fresh(path: &Path, overrides: &[String], out: &Option<PathBuf>) -> miette::Result<Target> {
    let spec = spec::load(path, overrides)?;
    let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let run_dir = out.clone().unwrap_or_else(|| match &spec.checkpoint.dir {
        Some(dir) => base_dir.join(dir),
        None => Path::new("runs").join(path.file_stem().unwrap_or_default()),
    });
    Ok(Target {
        spec,
        base_dir,
        run_dir,
    })
}

/// The run in `resume` (a folder, or a checkpoint file in one), continued: the spec
/// stored in its checkpoint (or `path`'s, which must agree with it), `overrides` on
/// top, refused when they change anything but [`spec::SAFE_ON_RESUME`].
fn resumed(
    resume: &Path,
    path: Option<&Path>,
    overrides: &[String],
    out: &Option<PathBuf>,
) -> miette::Result<Target> {
    let run = super::stored::open(resume)?;
    let run_dir = run.run_dir.clone();
    if let Some(out) = out
        && std::path::absolute(out).ok() != std::path::absolute(&run_dir).ok()
    {
        miette::bail!(
            help = "drop --out: a resumed run writes where it was started",
            "--out {} would move the run resumed from {}",
            out.display(),
            run_dir.display()
        );
    }
    let (spec, base_dir) = match path {
        Some(path) => {
            let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (spec::load(path, overrides)?, base_dir)
        }
        None => run.with_overrides(overrides)?,
    };
    let ran = &run.spec;
    let changes = spec::resume_changes(ran, &spec);
    if let Some(first) = changes.first() {
        let list = changes
            .iter()
            .map(|c| format!("`{}`: {} in the run, {} now", c.key, c.was, c.now))
            .collect::<Vec<_>>()
            .join("; ");
        miette::bail!(
            help = format!(
                "a resumed run continues the same run; only these may change: {}, and \
                 `train.steps` under a constant schedule. To change `{}`, start a new run",
                spec::SAFE_ON_RESUME.join(", "),
                first.key
            ),
            "resuming {} would change {}",
            run_dir.display(),
            list
        );
    }
    Ok(Target {
        spec,
        base_dir,
        run_dir,
    })
}

/// The MPI ranks of this run when `mpiexec` (or `srun`) started it with the `mpi`
/// feature built in; none otherwise.
#[cfg(feature = "mpi")]
fn ranks() -> miette::Result<Option<Arc<dyn cllm::machine::Exchange>>> {
    let mpi = cllm::mpi::start().map_err(|e| miette::miette!("cannot start MPI: {e}"))?;
    Ok(mpi.map(|m| m as Arc<dyn cllm::machine::Exchange>))
}

#[cfg(not(feature = "mpi"))]
fn ranks() -> miette::Result<Option<Arc<dyn cllm::machine::Exchange>>> {
    const LAUNCHED: [&str; 3] = ["PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"];
    if LAUNCHED.iter().any(|v| std::env::var_os(v).is_some()) {
        cllm::errln!(
            "warning: started by an MPI launcher, but this cllm was built without the `mpi` \
             feature: every process trains the whole model alone (cargo build --release --features mpi)"
        );
    }
    Ok(None)
}

/// The run's target, once every rank knows whether every other has one: a rank whose
/// spec was refused prints why, and every rank stops with exit 1 (see
/// [`cllm::machine::agree`]).
fn agree_on_target(
    target: miette::Result<Target>,
    ranks: &Option<Arc<dyn cllm::machine::Exchange>>,
) -> Result<Target, miette::Result<ExitCode>> {
    use cllm::machine::Agreement;
    let Some(ranks) = ranks.as_ref().filter(|r| r.ranks() > 1) else {
        return target.map_err(Err);
    };
    let failure = target.as_ref().err().map(|e| format!("{e:?}"));
    match (
        cllm::machine::agree(ranks.as_ref(), failure.as_deref(), 0),
        target,
    ) {
        (Agreement::Failed { speaks: true }, Err(error)) => Err(Err(error)),
        (_, Err(_)) => Err(Ok(ExitCode::FAILURE)),
        (Agreement::OtherFailed { rank }, Ok(_)) if ranks.rank() == 0 => Err(Err(miette::miette!(
            "rank {rank} could not start the run; its message says why"
        ))),
        (Agreement::OtherFailed { .. }, Ok(_)) => Err(Ok(ExitCode::FAILURE)),
        (_, Ok(target)) => Ok(target),
    }
}

/// An error of a run split over ranks. One that every rank met at the same point is
/// printed by one rank, and every rank returns exit 1 normally (MPI is finalized when
/// the last handle drops). An error of one rank alone (a write that failed on rank 0)
/// must end the others, which would wait in the next exchange forever: its whole
/// message goes out in one write, then the job is aborted after a moment for the
/// launcher to forward it (an abort right after many small writes lost the message).
fn on_every_rank(
    error: runtime::RunError,
    ranks: Option<Arc<dyn cllm::machine::Exchange>>,
) -> miette::Result<ExitCode> {
    let Some(ranks) = ranks.filter(|r| r.ranks() > 1) else {
        return Err(error.into());
    };
    match error.on_every_rank(ranks.rank()) {
        Some(true) => Err(error.into()),
        Some(false) => Ok(ExitCode::FAILURE),
        None => {
            use std::io::Write;
            let text = format!("rank {}: {:?}\n", ranks.rank(), miette::Report::from(error));
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(text.as_bytes());
            let _ = stderr.flush();
            drop(stderr);
            std::thread::sleep(std::time::Duration::from_millis(500));
            ranks.abort(1)
        }
    }
}

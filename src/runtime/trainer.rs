//! One training run: initialise (or resume), then step, log, evaluate and checkpoint.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::checkpoint;
use crate::data::{Batch, Cursor, Dataset};
use crate::machine::Machine;
use crate::plan;
use crate::runtime::eval::{machine_accuracy, validation_loss};
use crate::runtime::optimizer;
use crate::runtime::report::{Averages, Reporter, Speed};
use crate::runtime::saving;
use crate::runtime::session::{self, Session};
use crate::runtime::{RunError, RunOptions};
use crate::spec::Spec;

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Steps completed (including those before a resume).
    pub steps: u64,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Loss of every step this invocation ran, in order.
    pub losses: Vec<f64>,
    pub val_loss: Option<f64>,
    /// Exact-match accuracy on held-out problems (addition only): (right, total).
    pub accuracy: Option<(usize, usize)>,
    /// True when stopped by `stop_at` or an interrupt before `train.steps`.
    pub stopped_early: bool,
    pub checkpoint: PathBuf,
    /// Wall time, and tokens/s and MFU averaged over this invocation's training time.
    pub averages: Averages,
    /// Seconds spent exchanging with other ranks (a run split over ranks).
    pub exchange_seconds: Option<f64>,
    /// Bytes this rank sent to the other ranks (a run split over ranks).
    pub exchange_bytes: Option<u64>,
    /// Seconds the gradient all-to-all kept this rank waiting after its compute, and
    /// whether it was overlapped with backward (a run split over ranks).
    pub all_to_all_wait: Option<(f64, bool)>,
}

/// A run's machine and where it stands.
pub(super) struct State {
    pub machine: Machine<f32>,
    pub step: u64,
    pub cursor: Cursor,
}

/// Everything a run sets up before its first step.
struct Setup {
    /// The run folder's lock (rank 0's; held until the run ends).
    _lock: Option<crate::run_folder::RunFolderLock>,
    state: State,
    data: Dataset,
    report: Reporter,
    speed: Speed,
    /// Said after the header when a resume runs on other kernels than the run did.
    route_note: Option<String>,
}

/// Trains the model `spec` describes; see [`RunOptions`] for the how.
pub fn train(spec: &Spec, options: &RunOptions) -> Result<RunSummary, RunError> {
    let setup = set_up(spec, options);
    // Over ranks, every rank learns whether every other set up the same run, so a
    // failure anywhere stops all of them at this point, each with exit 1.
    let setup = match &options.ranks {
        Some(ranks) => session::agree_on_every_rank(ranks.as_ref(), spec, setup, |s: &Setup| {
            s.state.machine.plan()
        })?,
        None => setup?,
    };
    let Setup {
        _lock,
        mut state,
        data,
        mut report,
        speed,
        route_note,
    } = setup;
    let micro_batch = spec.train.micro_batch() as usize;
    let checkpoint_path = options.run_dir.join(checkpoint::FILE_NAME);
    let total = spec.train.steps;
    report.say(&format!(
        "training {} parameters, {:.3} GFLOP a step, for {} steps of {} sequences × {} tokens ({} shards on {} thread(s); {}; {}); {}; MFU against the measured {} of {:.0} GFLOP/s; run folder {}",
        spec.model.parameter_count(),
        speed.step_flops / 1e9,
        total,
        spec.train.batch,
        spec.model.context,
        state.machine.plan().shards,
        match (&options.ranks, state.machine.pipeline_stages()) {
            (Some(_), Some(p)) => format!("{p} pipeline stages × {}", state.machine.plan().threads),
            (Some(r), None) => format!("{} ranks × {}", r.ranks(), state.machine.plan().threads),
            (None, _) => state.machine.plan().threads.to_string(),
        },
        match state.machine.compile_seconds() {
            Some(seconds) => format!("JIT compiled in {:.0} ms", 1e3 * seconds),
            None => "reference interpreter".to_string(),
        },
        match state.machine.pipeline_stages() {
            // Rank 0 speaks for the run: stage 0's own arenas.
            Some(_) => format!(
                "stage 0's own arena {} × {} passes in flight, its parameters {} of the model's {}",
                plan::human_bytes(state.machine.arena_bytes()),
                state.machine.arena_count(),
                plan::human_bytes(state.machine.param_bytes()),
                plan::human_bytes(4 * spec.model.parameter_count() as u64),
            ),
            None => format!("arena {} per worker", plan::human_bytes(state.machine.arena_bytes())),
        },
        products(state.machine.plan().precision),
        speed.peak_name,
        speed.peak_gflops,
        options.run_dir.display()
    ));
    report.say(&format!("data: {}", data.split()));
    for note in (data.tokenize_note().map(str::to_string).into_iter()).chain(route_note) {
        report.say(&format!("note: {note}"));
    }
    if state.step == 0
        && let Some(weights @ crate::spec::Weights::Hub { .. }) = &spec.model.weights
    {
        // The file read, from the cache the hub tools fill (its sizes were read at load).
        let file = weights.file(&options.base_dir)?;
        report.say(&format!(
            "weights: {} from the Hugging Face cache, {}; its config.json gave the sizes the spec left out",
            weights.to_cllm(),
            file.display()
        ));
    }
    if spec.plan.stages > 1 && state.machine.pipeline_stages().is_none() {
        report.say(&format!(
            "note: plan.stages = {0} but this process runs alone: the stages run as one \
             (the same numbers); `mpiexec -n {0}` with an `mpi` build runs the pipeline",
            spec.plan.stages
        ));
    }
    if let Some(warning) = warmup_warning(spec.train.schedule.warmup(), total) {
        report.warn(&warning);
    }

    let t = spec.model.context as usize;
    let mut micro_batches: Vec<Batch> = (0..spec.train.accumulate)
        .map(|_| Batch::new(micro_batch, t))
        .collect();
    let mut val_scratch = Batch::new(micro_batch, t);
    let mut losses = Vec::new();
    let mut last_eval = None;
    let mut stopped_early = false;

    // The loop runs on a thread of the machine's pool, so each step forks its
    // parallel work from inside the pool: no job is injected, nothing is allocated.
    let mut first_loss: Option<f64> = None;
    let pool = state.machine.pool();
    pool.install(|| -> Result<(), RunError> {
        while state.step < total {
            // Over ranks, all stop at the same step when any was interrupted.
            let mut interrupted = options.interrupt.load(Ordering::Relaxed);
            if let Some(ranks) = &options.ranks {
                interrupted = crate::machine::any_rank(ranks.as_ref(), interrupted);
            }
            if interrupted || options.stop_at.is_some_and(|k| state.step >= k) {
                stopped_early = true;
                break;
            }
            let loss = step(&mut state, &data, &mut micro_batches);
            if !loss.is_finite() {
                report.finish();
                return Err(RunError::NonFinite {
                    step: state.step + 1,
                    loss,
                });
            }
            let first = *first_loss.get_or_insert(loss);
            if let Some(what) = divergence(loss, first) {
                report.finish();
                return Err(RunError::Diverged {
                    step: state.step + 1,
                    what,
                });
            }
            let stats = optimizer::apply(&mut state.machine, &spec.train, state.step);
            if !stats.grad_norm.is_finite() || stats.grad_norm > f32::MAX as f64 {
                // The update just applied is not finite: stop before anything is saved.
                report.finish();
                return Err(RunError::Diverged {
                    step: state.step + 1,
                    what: format!("the gradient norm is {:e}, beyond f32", stats.grad_norm),
                });
            }
            state.step += 1;
            losses.push(loss);
            report.step(
                state.step,
                total,
                loss,
                stats.lr,
                stats.grad_norm,
                spec.train.log_every,
            );
            if state.step.is_multiple_of(spec.eval.every) || state.step == total {
                report.pause();
                last_eval = Some(evaluate(
                    &mut state,
                    spec,
                    &data,
                    &mut val_scratch,
                    &report,
                )?);
                let (val_loss, accuracy) = last_eval.expect("just set");
                report.eval(state.step, val_loss, accuracy);
            }
            if state.step.is_multiple_of(spec.checkpoint.every) && state.step < total {
                saving::save(&mut state, &checkpoint_path, spec, &data, options)?;
            }
        }
        Ok(())
    })?;
    saving::save(&mut state, &checkpoint_path, spec, &data, options)?;
    report.finish();
    let averages = report.averages();
    if stopped_early {
        report.say(&format!(
            "stopped at step {}; checkpoint saved to {}",
            state.step,
            checkpoint_path.display()
        ));
    }
    Ok(RunSummary {
        steps: state.step,
        final_loss: losses.last().copied().unwrap_or(f64::NAN),
        losses,
        val_loss: last_eval.map(|e| e.0),
        accuracy: last_eval.and_then(|e| e.1),
        stopped_early,
        checkpoint: checkpoint_path,
        averages,
        exchange_seconds: state.machine.exchange_seconds(),
        exchange_bytes: state.machine.exchange_bytes(),
        all_to_all_wait: state.machine.all_to_all_wait(),
    })
}

/// Plans, loads, compiles, and initialises or restores the run; opens its reports.
fn set_up(spec: &Spec, options: &RunOptions) -> Result<Setup, RunError> {
    let Session {
        mut machine, data, ..
    } = session::assemble(
        spec,
        options.passes,
        &options.base_dir,
        options.backend,
        options.ranks.as_ref(),
    )?;
    let mut route_note = None;
    let (done, cursor) = match &options.resume {
        Some(from) => {
            let path = checkpoint::locate(from);
            let restored = session::restore(&mut machine, &path)?;
            let now = data.fingerprint();
            if let Some(was) = restored.data
                && Some(&was) != now.as_ref()
                && !options.allow_data_change
            {
                return Err(RunError::DataChanged {
                    path,
                    was,
                    now: now.unwrap_or_else(|| "none".into()),
                });
            }
            route_note = session::route_note(restored.kernels.as_deref(), spec.train.precision);
            (restored.step, restored.cursor)
        }
        None => {
            session::initialise(&mut machine, spec, &options.base_dir)?;
            (0, Dataset::cursor(spec.train.seed))
        }
    };
    let mut state = State {
        machine,
        step: done,
        cursor,
    };
    state.machine.set_poison(options.poison);
    let total = spec.train.steps;
    if let Some(from) = &options.resume
        && state.step >= total
    {
        return Err(RunError::NothingToResume {
            path: checkpoint::locate(from),
            step: state.step,
            steps: total,
        });
    }
    let plan = state.machine.plan();
    let (peak_name, peak) = crate::peak::matrix_peak(plan.precision, plan.threads);
    let speed = Speed {
        step_flops: plan.step_flops(spec.train.accumulate) as f64,
        // Measured at start-up (~0.1 s), as `cllm bench` does: MFU is against what this
        // machine's FMA units do at their widest width on the run's threads.
        // Over R ranks, R processes of this machine's kind (each measures its own).
        peak_name,
        peak_gflops: peak * options.ranks.as_ref().map_or(1, |r| r.ranks()) as f64,
        step_tokens: spec.train.batch as usize * spec.model.context as usize,
    };
    let follower = options.ranks.as_ref().is_some_and(|r| r.rank() != 0);
    let lock = match follower {
        true => None,
        false => Some(saving::claim_run_folder(spec, options, state.step)?),
    };
    let report = if follower {
        Reporter::silent(total, speed)
    } else {
        Reporter::new(
            &options.run_dir,
            state.step,
            total,
            options.resume.is_none(),
            options.quiet,
            speed,
        )
        .map_err(|source| RunError::RunDir {
            path: options.run_dir.clone(),
            source,
        })?
    };
    Ok(Setup {
        _lock: lock,
        state,
        data,
        report,
        speed,
        route_note,
    })
}

/// Forward and backward over every micro-batch of one step; returns the step's loss.
fn step(state: &mut State, data: &Dataset, micro_batches: &mut [Batch]) -> f64 {
    step_once(&mut state.machine, &mut state.cursor, data, micro_batches)
}

/// Reads the step's micro-batches and runs forward and backward over every shard of
/// every micro-batch on the machine's threads; returns the step's loss.
pub(crate) fn step_once(
    machine: &mut Machine<f32>,
    cursor: &mut Cursor,
    data: &Dataset,
    micro_batches: &mut [Batch],
) -> f64 {
    for batch in micro_batches.iter_mut() {
        data.next_train(cursor, batch);
    }
    // One scale for the whole step: the loss is the mean over every scored target of
    // the step, however it is split into micro-batches (see softmax_xent).
    let scored: usize = micro_batches.iter().map(Batch::scored).sum();
    let loss_scale = 1.0 / scored.max(1) as f64;
    machine.forward_backward(micro_batches, loss_scale) * loss_scale
}

fn evaluate(
    state: &mut State,
    spec: &Spec,
    data: &Dataset,
    scratch: &mut Batch,
    report: &Reporter,
) -> Result<(f64, Option<(usize, usize)>), RunError> {
    let val_loss = validation_loss(
        &mut state.machine,
        data,
        spec.eval.batches as usize,
        scratch,
    );
    if data.addition().is_some() && state.machine.state_on_first_stage() {
        // Decoding needs every parameter: gathered whole to rank 0, which decodes.
        state.machine.gather_moments();
    }
    let accuracy = (data.addition())
        .filter(|_| state.machine.holds_whole_state())
        .map(|task| {
            machine_accuracy(&state.machine, task, |done, total| {
                report.evaluating(done, total)
            })
        })
        .transpose()?;
    Ok((val_loss, accuracy))
}

/// Losses this many times the run's first are divergence, not training: a model that
/// starts near ln V and reaches 100 ln V has left every useful region (a loss of 1.7e10
/// once trained on).
const DIVERGED_FACTOR: f64 = 100.0;

/// Why a (finite) loss means the run diverged, if it does.
fn divergence(loss: f64, first: f64) -> Option<String> {
    (loss > DIVERGED_FACTOR * first.max(1e-3)).then(|| {
        format!("the loss is {loss:.4e}, over {DIVERGED_FACTOR}× the run's first ({first:.4})")
    })
}

/// How the run's matrix products are computed, for its header.
fn products(precision: cllm_kernels::Precision) -> String {
    use cllm_kernels::cpu;
    match precision {
        cllm_kernels::Precision::Fp32 => format!("fp32 products on {}", cpu::isa().name()),
        cllm_kernels::Precision::Bf16 => {
            format!(
                "bf16 products (fp32 sums) on {}",
                cpu::bf16_unit().describe()
            )
        }
    }
}

/// The warning for a warm-up the run never finishes: step k (0-based) runs at
/// lr·(k+1)/warmup, so a run of `total` steps reaches `lr` when warmup ≤ total.
fn warmup_warning(warmup: u64, total: u64) -> Option<String> {
    (warmup > total).then(|| {
        format!(
            "the schedule's warm-up ({warmup} steps) is longer than the run ({total} steps): \
             the learning rate never reaches `lr`; shorten the warm-up or train longer"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::divergence;

    #[test]
    fn a_loss_far_above_the_first_is_divergence() {
        assert!(divergence(1.7e10, 5.5).is_some());
        assert!(divergence(551.0, 5.5).is_some());
        assert!(divergence(549.0, 5.5).is_none());
        assert!(divergence(5.6, 5.5).is_none());
        // A run that starts near zero loss is judged against 1e-3, not against 0.
        assert!(divergence(0.05, 0.0).is_none());
    }

    #[test]
    fn a_warm_up_as_long_as_the_run_reaches_lr() {
        use super::warmup_warning;
        assert!(warmup_warning(100, 100).is_none());
        assert!(warmup_warning(99, 100).is_none());
        let warning = warmup_warning(101, 100).expect("a warning");
        assert!(warning.contains("longer than the run"), "{warning}");
    }
}

//! One training run: initialise (or resume), then step, log, evaluate and checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::checkpoint::{self, Snapshot};
use crate::data::{Batch, Cursor, Dataset};
use crate::graph::Init;
use crate::interp::Interpreter;
use crate::plan::{self, Plan};
use crate::rng::Rng;
use crate::runtime::eval::{addition_accuracy, validation_loss};
use crate::runtime::optimizer::{self, AdamWState};
use crate::runtime::report::Reporter;
use crate::runtime::sampler::Sampler;
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
}

struct State {
    interp: Interpreter<f32>,
    adamw: AdamWState,
    step: u64,
    cursor: Cursor,
}

/// Trains the model `spec` describes; see [`RunOptions`] for the how.
pub fn train(spec: &Spec, options: &RunOptions) -> Result<RunSummary, RunError> {
    // Refused here, before any buffer is allocated or data read, if it cannot fit the budget.
    let plan = plan::plan_with(spec, options.passes)?;
    let data = Dataset::load(spec, &options.base_dir)?;
    let micro_batch = (spec.train.batch / spec.train.accumulate) as usize;
    let checkpoint_path = options.run_dir.join(checkpoint::FILE_NAME);
    let mut state = match &options.resume {
        Some(from) => resume(plan, &checkpoint::locate(from))?,
        None => fresh(plan, spec, &options.base_dir)?,
    };
    state.interp.set_poison(options.poison);
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
    let run_dir_error = |source| RunError::RunDir {
        path: options.run_dir.clone(),
        source,
    };
    let mut report = Reporter::new(
        &options.run_dir,
        state.step,
        total,
        options.resume.is_none(),
        options.quiet,
    )
    .map_err(run_dir_error)?;
    report.say(&format!(
        "training {} parameters for {} steps of {} sequences × {} tokens ({} shards; interpreter, 1 thread; arena {}); run folder {}",
        state.interp.graph().parameter_count(),
        total,
        spec.train.batch,
        spec.model.context,
        state.interp.plan().shards,
        plan::human_bytes(state.interp.plan().arena.peak_bytes),
        options.run_dir.display()
    ));

    let t = spec.model.context as usize;
    let mut micro_batches: Vec<Batch> = (0..spec.train.accumulate)
        .map(|_| Batch::new(micro_batch, t))
        .collect();
    let mut val_scratch = Batch::new(micro_batch, t);
    let mut losses = Vec::new();
    let mut last_eval = None;
    let mut stopped_early = false;

    while state.step < total {
        if options.interrupt.load(Ordering::Relaxed)
            || options.stop_at.is_some_and(|k| state.step >= k)
        {
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
        let stats = optimizer::apply(&mut state.interp, &mut state.adamw, &spec.train, state.step);
        state.step += 1;
        losses.push(loss);
        report.step(
            state.step,
            total,
            loss,
            stats.lr,
            stats.grad_norm,
            spec.train.batch as usize * t,
            spec.train.log_every,
        );
        if state.step.is_multiple_of(spec.eval.every) || state.step == total {
            last_eval = Some(evaluate(&mut state, spec, &data, &mut val_scratch));
            let (val_loss, accuracy) = last_eval.expect("just set");
            report.eval(state.step, val_loss, accuracy);
        }
        if state.step.is_multiple_of(spec.checkpoint.every) && state.step < total {
            save(&state, &checkpoint_path, spec, &data, &options.spec_text)?;
        }
    }
    save(&state, &checkpoint_path, spec, &data, &options.spec_text)?;
    report.finish();
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
    })
}

/// Forward and backward over every micro-batch of one step; returns the step's loss.
fn step(state: &mut State, data: &Dataset, micro_batches: &mut [Batch]) -> f64 {
    for batch in micro_batches.iter_mut() {
        data.next_train(&mut state.cursor, batch);
    }
    // One scale for the whole step: the loss is the mean over every scored target of
    // the step, however it is split into micro-batches (see softmax_xent).
    let scored: usize = micro_batches.iter().map(Batch::scored).sum();
    let loss_scale = 1.0 / scored.max(1) as f64;
    state.interp.zero_param_grads();
    let mut loss_sum = 0.0;
    let shard_len = state.interp.graph().dims.batch * state.interp.graph().dims.t;
    for batch in micro_batches.iter() {
        for (tokens, targets) in batch
            .tokens
            .chunks_exact(shard_len)
            .zip(batch.targets.chunks_exact(shard_len))
        {
            loss_sum += state.interp.forward(tokens, targets, loss_scale);
            state.interp.backward(loss_scale);
        }
    }
    loss_sum * loss_scale
}

fn evaluate(
    state: &mut State,
    spec: &Spec,
    data: &Dataset,
    scratch: &mut Batch,
) -> (f64, Option<(usize, usize)>) {
    let val_loss = validation_loss(&mut state.interp, data, spec.eval.batches as usize, scratch);
    let accuracy = data.addition().map(|task| {
        let interp = &state.interp;
        let params = (0..interp.graph().params.len())
            .map(|i| interp.param(i))
            .collect();
        let mut sampler = Sampler::new(interp.graph(), spec.model.ln_eps, params);
        addition_accuracy(&mut sampler, task)
    });
    (val_loss, accuracy)
}

fn fresh(plan: Plan, spec: &Spec, base_dir: &Path) -> Result<State, RunError> {
    let mut interp = Interpreter::new(plan);
    let params = interp.graph().params.clone();
    if let Some(weights) = &spec.model.weights {
        let shapes: Vec<(String, Vec<usize>)> = params
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect();
        let values = checkpoint::import_gpt2(&base_dir.join(weights), &shapes)?;
        for (i, v) in values.into_iter().enumerate() {
            interp.param_mut(i).copy_from_slice(&v);
        }
    } else {
        let mut rng = Rng::derive(spec.train.seed, "parameter init");
        for (i, p) in params.iter().enumerate() {
            let values = interp.param_mut(i);
            match p.init {
                Init::Normal { std } => values
                    .iter_mut()
                    .for_each(|x| *x = (std * rng.normal()) as f32),
                Init::Zeros => values.fill(0.0),
                Init::Ones => values.fill(1.0),
            }
        }
    }
    let adamw = AdamWState::zeros(params.iter().map(|p| p.shape.iter().product()));
    Ok(State {
        interp,
        adamw,
        step: 0,
        cursor: Dataset::cursor(spec.train.seed),
    })
}

fn resume(plan: Plan, path: &Path) -> Result<State, RunError> {
    let mut stored = checkpoint::load(path)?;
    let format = |reason: &str| checkpoint::CheckpointError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let step = stored
        .field(path, "step")?
        .parse()
        .map_err(|_| format("its `step` is not a number"))?;
    let cursor: Cursor = serde_json::from_str(stored.field(path, "cursor")?)
        .map_err(|_| format("its `cursor` is unreadable"))?;
    let mut interp = Interpreter::new(plan);
    let params = interp.graph().params.clone();
    let mut adamw = AdamWState::zeros(params.iter().map(|p| p.shape.iter().product()));
    for (i, p) in params.iter().enumerate() {
        let values = stored.take(path, &p.name, &p.shape)?;
        interp.param_mut(i).copy_from_slice(&values);
        adamw.m[i] = stored.take(path, &format!("adamw.m.{}", p.name), &p.shape)?;
        adamw.v[i] = stored.take(path, &format!("adamw.v.{}", p.name), &p.shape)?;
    }
    Ok(State {
        interp,
        adamw,
        step,
        cursor,
    })
}

fn save(
    state: &State,
    path: &Path,
    spec: &Spec,
    data: &Dataset,
    spec_text: &str,
) -> Result<(), RunError> {
    let graph = state.interp.graph();
    let mut tensors = Vec::new();
    for (i, p) in graph.params.iter().enumerate() {
        tensors.push((p.name.clone(), p.shape.clone(), state.interp.param(i)));
    }
    for (i, p) in graph.params.iter().enumerate() {
        tensors.push((
            format!("adamw.m.{}", p.name),
            p.shape.clone(),
            state.adamw.m[i].as_slice(),
        ));
        tensors.push((
            format!("adamw.v.{}", p.name),
            p.shape.clone(),
            state.adamw.v[i].as_slice(),
        ));
    }
    let spec_json = serde_json::to_string(spec).expect("a Spec serializes");
    let extra = data.tokenizer.words().map(|w| {
        (
            "words".to_string(),
            serde_json::to_string(&w).expect("strings serialize"),
        )
    });
    let snapshot = Snapshot {
        step: state.step,
        cursor: &state.cursor,
        spec_text,
        spec_json,
        extra: extra.into_iter().collect(),
        tensors,
    };
    Ok(checkpoint::save(path, &snapshot)?)
}

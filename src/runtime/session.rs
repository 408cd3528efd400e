//! One run's pipeline, assembled in one place for `cllm run` and `cllm bench`: the
//! plan (refused before anything is allocated or read if it cannot fit the budget), the
//! data, the compiled program, the machine, and the parameters' first values — the
//! model's own initialisation or imported weights, or a checkpoint's state.

use std::path::Path;
use std::time::Instant;

use crate::checkpoint;
use crate::codegen;
use crate::data::{Cursor, Dataset};
use crate::graph::Init;
use crate::machine::Machine;
use crate::plan::{self, PassOptions};
use crate::rng::Rng;
use crate::runtime::{Backend, RunError};
use crate::spec::Spec;

/// The assembled pipeline, its parameters not yet set.
pub(crate) struct Session {
    pub machine: Machine<f32>,
    pub data: Dataset,
    /// Milliseconds spent planning and compiling.
    pub plan_ms: f64,
    pub jit_ms: f64,
}

/// Plans `spec`, loads its data, compiles the plan (for the JIT back end) and builds
/// the machine that runs it.
pub(crate) fn assemble(
    spec: &Spec,
    passes: PassOptions,
    base_dir: &Path,
    backend: Backend,
    ranks: Option<&std::sync::Arc<dyn crate::machine::Exchange>>,
) -> Result<Session, RunError> {
    let started = Instant::now();
    let plan = plan::plan_with(spec, passes)?;
    let plan_ms = 1e3 * started.elapsed().as_secs_f64();
    // A stages plan fits a budget a stage; one process alone runs it whole.
    if ranks.is_none() && plan.stages > 1 && plan.total_bytes() > plan.memory_budget {
        let human = plan::human_bytes;
        return Err(crate::machine::StageError::Alone {
            stages: plan.stages,
            needs: human(plan.total_bytes()),
            budget: human(plan.memory_budget),
        }
        .into());
    }
    let data = Dataset::load(spec, base_dir)?;
    let started = Instant::now();
    let program = match backend {
        Backend::Jit => Some(codegen::compile(&plan, codegen::Checks::default())?),
        Backend::Interp => None,
    };
    let jit_ms = 1e3 * started.elapsed().as_secs_f64();
    let threads = plan.threads;
    let mut machine =
        Machine::try_new(plan).map_err(|e| RunError::Threads(threads, e.to_string()))?;
    // Over ranks: pipeline stages, one per rank, or data-parallel ranks. Alone, a
    // pipeline's stages run as one process (the same numbers).
    match ranks {
        Some(ranks) if spec.plan.stages > 1 => {
            let accumulate = spec.train.accumulate as usize;
            machine.set_stages(ranks.clone(), spec.plan.stages as usize, accumulate)?
        }
        Some(ranks) => machine.set_ranks(ranks.clone(), spec.plan.overlap)?,
        None => {}
    }
    if let Some(program) = program {
        machine.attach_jit(program);
    }
    Ok(Session {
        machine,
        data,
        plan_ms,
        jit_ms,
    })
}

/// A fresh model: `model.weights` imported, or each parameter drawn as the graph says
/// (GPT-2's: normal(0, init_std), residual projections scaled by 1/√(2L), zero biases,
/// unit LayerNorm gains) from the seed's "parameter init" stream.
pub(crate) fn initialise(
    machine: &mut Machine<f32>,
    spec: &Spec,
    base_dir: &Path,
) -> Result<(), RunError> {
    let params = machine.graph().params.clone();
    if let Some(weights) = &spec.model.weights {
        let shapes: Vec<(String, Vec<usize>)> = params
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect();
        let values = checkpoint::import_gpt2(&weights.file(base_dir)?, &shapes)?;
        for (i, v) in values.into_iter().enumerate() {
            if machine.holds_param(i) {
                machine.param_mut(i).copy_from_slice(&v);
            }
        }
        return Ok(());
    }
    let mut rng = Rng::derive(spec.train.seed, "parameter init");
    for (i, p) in params.iter().enumerate() {
        if !machine.holds_param(i) {
            // Another pipeline stage's: drawn all the same, so the stream stays in step.
            if let Init::Normal { .. } = p.init {
                rng.skip_normals(p.shape.iter().product());
            }
            continue;
        }
        let values = machine.param_mut(i);
        match p.init {
            Init::Normal { std } => values
                .iter_mut()
                .for_each(|x| *x = (std * rng.normal()) as f32),
            Init::Zeros => values.fill(0.0),
            Init::Ones => values.fill(1.0),
        }
    }
    Ok(())
}

/// What a checkpoint says of where its run stands.
pub(crate) struct Restored {
    pub step: u64,
    pub cursor: Cursor,
    /// The fingerprint of the data it trained on (`Dataset::fingerprint`), if recorded.
    pub data: Option<String>,
    /// The kernels its numbers came from (`cpu::route`), if recorded.
    pub kernels: Option<String>,
}

/// A checkpoint's parameters and AdamW moments into `machine`; returns its step, data
/// cursor and data fingerprint.
pub(crate) fn restore(machine: &mut Machine<f32>, path: &Path) -> Result<Restored, RunError> {
    let mut stored = checkpoint::load(path)?;
    let format = |reason: &str| checkpoint::CheckpointError::Unfit {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let step = stored
        .field(path, "step")?
        .parse()
        .map_err(|_| format("its `step` is not a number"))?;
    let cursor: Cursor = serde_json::from_str(stored.field(path, "cursor")?)
        .map_err(|_| format("its `cursor` is unreadable"))?;
    let params = machine.graph().params.clone();
    for (i, p) in params.iter().enumerate() {
        let values = stored.take(path, &p.name, &p.shape)?;
        if machine.holds_param(i) {
            machine.param_mut(i).copy_from_slice(&values);
        }
        let [m_name, v_name] = checkpoint::moment_names(&p.name);
        let m = stored.take(path, &m_name, &p.shape)?;
        let v = stored.take(path, &v_name, &p.shape)?;
        machine.set_moments(i, &m, &v);
    }
    Ok(Restored {
        step,
        cursor,
        data: stored.metadata.get(checkpoint::DATA).cloned(),
        kernels: stored.metadata.get(checkpoint::KERNELS).cloned(),
    })
}

/// What a resume says when its kernels are not those the checkpoint's steps ran on
/// (`was`, as the checkpoint records `cpu::route`): the run goes on, in other bits.
pub(crate) fn route_note(was: Option<&str>, precision: cllm_kernels::Precision) -> Option<String> {
    let here = cllm_kernels::cpu::route(precision);
    let was = was.filter(|was| *was != here)?;
    Some(format!(
        "the steps up to this checkpoint ran on {was}, these run on {here}: from here the \
         run's bits differ from those it would have on {was} (`CLLM_ISA` picks a route this \
         CPU has)"
    ))
}

/// The set-up, agreed among the ranks (see [`crate::machine::agree`]): every rank
/// learns whether every other set up the same binary, resolved spec and plan, so a
/// failure anywhere stops all of them here. This rank's own error, another rank's
/// failure or a mismatch come back wrapped in [`RunError::OnEveryRank`] where this rank
/// prints it, else in [`RunError::SaidByAnotherRank`].
pub(crate) fn agree_on_every_rank<T>(
    ranks: &dyn crate::machine::Exchange,
    spec: &Spec,
    setup: Result<T, RunError>,
    plan_of: impl Fn(&T) -> &crate::plan::Plan,
) -> Result<T, RunError> {
    use crate::machine::Agreement;
    use std::hash::{Hash, Hasher};
    let failure = setup.as_ref().err().map(|e| format!("{e:?}"));
    let fingerprint = setup.as_ref().map_or(0, |done| {
        let plan = plan_of(done);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(spec)
            .expect("a Spec serializes")
            .hash(&mut h);
        (plan.shards, plan.kernels.len(), plan.arena.peak_bytes).hash(&mut h);
        std::env::current_exe()
            .ok()
            .and_then(|exe| std::fs::read(exe).ok())
            .hash(&mut h);
        h.finish()
    });
    let agreed = |error: RunError, speaks: bool| match speaks {
        true => RunError::OnEveryRank(Box::new(error)),
        false => RunError::SaidByAnotherRank(Box::new(error)),
    };
    let agreement = crate::machine::agree(ranks, failure.as_deref(), fingerprint);
    match setup {
        Err(error) => Err(agreed(
            error,
            agreement == Agreement::Failed { speaks: true },
        )),
        Ok(done) => match agreement {
            // `Failed` answers only a rank that failed.
            Agreement::Same | Agreement::Failed { .. } => Ok(done),
            Agreement::OtherFailed { rank } => {
                Err(agreed(RunError::OtherRank { rank }, ranks.rank() == 0))
            }
            Agreement::Mismatch { rank } => {
                Err(agreed(RunError::RankMismatch { rank }, ranks.rank() == 0))
            }
        },
    }
}

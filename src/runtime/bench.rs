//! `cllm bench`: time the training step of a spec — the same plan, program and step
//! as `cllm run`, without logging, evaluation or checkpoints — after a warm-up.

use std::time::Instant;

use serde::Serialize;

use std::path::Path;

use crate::data::{Batch, Cursor, Dataset};
use crate::machine::Machine;
use crate::runtime::session::{self, Session};
use crate::runtime::{Backend, RunError, optimizer, trainer};
use crate::spec::{Spec, Train};

/// What `cllm bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub steps: usize,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub step_ms_max: f64,
    pub tokens_per_s: f64,
    pub step_gflop: f64,
    pub gflops: f64,
    pub plan_ms: f64,
    pub jit_ms: f64,
    pub threads: usize,
    /// (kernel family, share of the kernels' summed time, GFLOP/s of one thread), slowest first.
    pub kernels: Vec<(String, f64, f64)>,
}

/// The training step alone, as `cllm run` runs it (data, forward and backward of every
/// shard, the shard-gradient sum, clipping, AdamW), from the run's own initialisation:
/// what `cllm bench` times and the zero-allocation test counts.
pub struct StepLoop {
    pub machine: Machine<f32>,
    data: Dataset,
    cursor: Cursor,
    batches: Vec<Batch>,
    train: Train,
    step: u64,
    /// Milliseconds spent planning and compiling.
    pub plan_ms: f64,
    pub jit_ms: f64,
}

impl StepLoop {
    pub fn new(spec: &Spec, base_dir: &Path, backend: Backend) -> Result<StepLoop, RunError> {
        let passes = crate::plan::PassOptions::default();
        let Session {
            mut machine,
            data,
            plan_ms,
            jit_ms,
        } = session::assemble(spec, passes, base_dir, backend, None)?;
        session::initialise(&mut machine, spec, base_dir)?;
        let micro = spec.train.micro_batch() as usize;
        let t = spec.model.context as usize;
        Ok(StepLoop {
            machine,
            data,
            cursor: Dataset::cursor(spec.train.seed),
            batches: (0..spec.train.accumulate)
                .map(|_| Batch::new(micro, t))
                .collect(),
            train: spec.train.clone(),
            step: 0,
            plan_ms,
            jit_ms,
        })
    }

    /// One whole optimizer step; returns its loss.
    pub fn step(&mut self) -> f64 {
        let loss = trainer::step_once(
            &mut self.machine,
            &mut self.cursor,
            &self.data,
            &mut self.batches,
        );
        optimizer::apply(&mut self.machine, &self.train, self.step);
        self.step += 1;
        loss
    }
}

/// Times `steps` steps after `warmup` steps.
pub fn bench(
    spec: &Spec,
    base_dir: &Path,
    backend: Backend,
    warmup: usize,
    steps: usize,
) -> Result<BenchReport, RunError> {
    let mut looped = StepLoop::new(spec, base_dir, backend)?;
    let step_flops = looped.machine.plan().step_flops(spec.train.accumulate) as f64;
    let kernel_flops: Vec<u64> = looped
        .machine
        .plan()
        .kernels
        .iter()
        .map(|k| k.flops)
        .collect();
    let names: Vec<String> = looped
        .machine
        .plan()
        .kernels
        .iter()
        .map(|k| k.name.clone())
        .collect();
    let mut times = Vec::with_capacity(steps);
    let pool = looped.machine.pool();
    pool.install(|| {
        for s in 0..warmup + steps {
            if s == warmup {
                looped.machine.enable_profile();
            }
            let started = Instant::now();
            looped.step();
            if s >= warmup {
                times.push(1e3 * started.elapsed().as_secs_f64());
            }
        }
    });
    let machine = &looped.machine;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let profile = machine.profile().expect("profiling was enabled");
    let total: f64 = profile.iter().sum::<f64>().max(1e-12);
    let mut families: Vec<(String, f64, f64)> = Vec::new();
    for (k, seconds) in profile.iter().enumerate() {
        let flops = kernel_flops[k] as f64
            * machine.plan().shards as f64
            * spec.train.accumulate as f64
            * steps as f64;
        match families.iter_mut().find(|f| f.0 == names[k]) {
            Some(f) => {
                f.1 += seconds;
                f.2 += flops;
            }
            None => families.push((names[k].clone(), *seconds, flops)),
        }
    }
    // A worker's kernel time is wall time of every thread its kernels split over.
    let threads_per_worker = machine.gemm_threads() as f64;
    let mut kernels: Vec<(String, f64, f64)> = families
        .into_iter()
        .map(|(n, s, f)| (n, s / total, f / (s * threads_per_worker).max(1e-12) / 1e9))
        .collect();
    kernels.sort_by(|a, b| b.1.total_cmp(&a.1));
    let tokens = (spec.train.batch * spec.model.context) as f64;
    Ok(BenchReport {
        steps,
        step_ms_median: median,
        step_ms_min: sorted[0],
        step_ms_max: sorted[sorted.len() - 1],
        tokens_per_s: tokens / (median / 1e3),
        step_gflop: step_flops / 1e9,
        gflops: step_flops / (median / 1e3) / 1e9,
        plan_ms: looped.plan_ms,
        jit_ms: looped.jit_ms,
        threads: machine.plan().threads,
        kernels,
    })
}

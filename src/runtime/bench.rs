//! `cllm bench`: time the training step of a spec — the same plan, program and step
//! as `cllm run`, without logging, evaluation or checkpoints — after a warm-up.

use std::time::Instant;

use cllm_kernels::jit::JitOptions;
use serde::Serialize;

use crate::codegen;
use crate::data::{Batch, Dataset};
use crate::machine::Machine;
use crate::plan;
use crate::rng::Rng;
use crate::runtime::{Backend, RunError, optimizer, trainer};
use crate::spec::Spec;

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
    /// (kernel family, share of step time, GFLOP/s), slowest first.
    pub kernels: Vec<(String, f64, f64)>,
}

/// Times `steps` steps after `warmup` steps.
pub fn bench(
    spec: &Spec,
    base_dir: &std::path::Path,
    backend: Backend,
    warmup: usize,
    steps: usize,
) -> Result<BenchReport, RunError> {
    let started = Instant::now();
    let plan = plan::plan(spec)?;
    let plan_ms = 1e3 * started.elapsed().as_secs_f64();
    let started = Instant::now();
    let program = match backend {
        Backend::Jit => Some(codegen::compile(&plan, JitOptions::default())?),
        Backend::Interp => None,
    };
    let jit_ms = 1e3 * started.elapsed().as_secs_f64();
    let data = Dataset::load(spec, base_dir)?;
    let step_flops = plan.step_flops(spec.train.accumulate) as f64;
    let kernel_flops: Vec<u64> = plan.kernels.iter().map(|k| k.flops).collect();
    let names: Vec<String> = plan.kernels.iter().map(|k| k.name.clone()).collect();
    let mut machine = Machine::<f32>::new(plan);
    if let Some(program) = program {
        machine.attach_jit(program);
    }
    let mut rng = Rng::derive(spec.train.seed, "parameter init");
    for i in 0..machine.graph().params.len() {
        machine
            .param_mut(i)
            .iter_mut()
            .for_each(|x| *x = (0.02 * rng.normal()) as f32);
    }
    let micro = (spec.train.batch / spec.train.accumulate) as usize;
    let t = spec.model.context as usize;
    let mut batches: Vec<Batch> = (0..spec.train.accumulate)
        .map(|_| Batch::new(micro, t))
        .collect();
    let mut cursor = Dataset::cursor(spec.train.seed);
    let mut times = Vec::with_capacity(steps);
    for s in 0..warmup + steps {
        if s == warmup {
            machine.enable_profile();
        }
        let started = Instant::now();
        trainer::step_once(&mut machine, &mut cursor, &data, &mut batches);
        optimizer::apply(&mut machine, &spec.train, s as u64);
        if s >= warmup {
            times.push(1e3 * started.elapsed().as_secs_f64());
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let profile = machine.profile().expect("profiling was enabled").to_vec();
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
    let mut kernels: Vec<(String, f64, f64)> = families
        .into_iter()
        .map(|(n, s, f)| (n, s / total, f / s.max(1e-12) / 1e9))
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
        plan_ms,
        jit_ms,
        kernels,
    })
}

//! `cllm plan --threads N`: the step time the plan predicts on 1…128 threads of one
//! process, from its per-step costs and which of its steps split over threads.
//!
//! A step of the kernel IR takes t = max(FLOPs / F, bytes / B) on one thread (F one
//! thread's FLOP rate, B one thread's memory bandwidth). On N threads the runtime has
//! W = min(N, S) workers, each running ⌈S/W⌉ shards × A micro-batches in turn, and
//! gives each worker's products g = ⌊N/W⌋ threads: a matrix product or attention step
//! takes t/g, every other step (LayerNorm, GELU, residuals, the embedding, softmax and
//! cross-entropy, their backward: the row steps) t, whatever N. Then the gradient
//! sum's additions (`grads.rs`: a worker's after its shards, the rest over every
//! thread) and AdamW (7 streams of P floats, over every thread):
//!
//!   step(N)     = ⌈S/W⌉·A·Σ(split ? t/g : t) + worker additions + last additions/N
//!                 + AdamW/N
//!   efficiency  = step(1) / (N · step(N))
//!
//! What it leaves out, and so where it is optimistic: the memory bandwidth is taken to
//! grow with the threads (a real socket saturates), threads to be cores (no SMT, no
//! oversubscription), and a split product to divide evenly.

use super::Plan;
use super::grads;
use crate::plan::ir::StepCall;

/// One row: the predicted step on `threads` threads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThreadPrediction {
    pub threads: usize,
    pub step_s: f64,
    /// Of `step_s`, the row steps that do not split (per worker, in turn).
    pub serial_s: f64,
    pub efficiency: f64,
}

/// One thread's rates: FLOP/s and bytes/s.
#[derive(Clone, Copy, Debug)]
pub struct ThreadRates {
    pub flops_per_s: f64,
    pub bytes_per_s: f64,
}

/// Whether the runtime splits a step over a worker's spare threads.
fn splits(step: &StepCall) -> bool {
    matches!(
        step,
        StepCall::Matmul { .. }
            | StepCall::MatmulBackward { .. }
            | StepCall::Attention { .. }
            | StepCall::AttentionBackward { .. }
    )
}

/// One thread's seconds for every step of one shard pass: (split steps, row steps).
fn shard_pass(plan: &Plan, rates: ThreadRates) -> (f64, f64) {
    let (mut split, mut rows) = (0.0, 0.0);
    for step in plan.kernels.iter().flat_map(|k| &k.steps) {
        let (flops, bytes) = super::cost::kernel_cost(&plan.graph, std::slice::from_ref(step));
        let t = (flops as f64 / rates.flops_per_s).max(bytes as f64 / rates.bytes_per_s);
        if splits(step) {
            split += t;
        } else {
            rows += t;
        }
    }
    (split, rows)
}

/// The predicted step of `plan` (`accumulate` micro-batches) on `threads` threads.
pub fn predict(
    plan: &Plan,
    accumulate: usize,
    rates: ThreadRates,
    threads: usize,
) -> ThreadPrediction {
    let one = step_on(plan, accumulate, rates, 1);
    let at = step_on(plan, accumulate, rates, threads.max(1));
    ThreadPrediction {
        threads,
        efficiency: one.0 / (threads as f64 * at.0),
        step_s: at.0,
        serial_s: at.1,
    }
}

/// (seconds, of them the row steps) of a step on `threads` threads.
fn step_on(plan: &Plan, accumulate: usize, rates: ThreadRates, threads: usize) -> (f64, f64) {
    let shards = plan.shards;
    let workers = threads.min(shards);
    let per_worker = shards.div_ceil(workers) * accumulate;
    let gemm_threads = (threads / workers).max(1) as f64;
    let (split, rows) = shard_pass(plan, rates);
    let params: usize = plan.param_chunks.iter().map(|c| c.len).sum();
    let pass = |buffers: usize| (buffers * params * 4) as f64 / rates.bytes_per_s;
    let schedule = grads::schedule(shards, 0..shards, workers);
    let merge = |m: &grads::Merge| pass(m.addends.len() + 2);
    let worker_adds = (schedule.workers.iter())
        .map(|w| w.after.iter().flatten().map(merge).sum::<f64>())
        .fold(0.0, f64::max);
    let parallel = threads.min(plan.param_chunks.len().max(1)) as f64;
    let last: f64 = schedule.last.iter().map(merge).sum::<f64>() / parallel;
    let adamw = pass(7) / parallel;
    let compute = per_worker as f64 * (split / gemm_threads + rows);
    (
        compute + worker_adds + last + adamw,
        per_worker as f64 * rows,
    )
}

#[cfg(test)]
mod tests {
    use super::{ThreadRates, predict};

    fn plan(shards: u64) -> crate::plan::Plan {
        let text = format!(
            "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 50) }}\n\
             model gpt {{ context = 16 tokens  width = 64  layers = 2  heads = 2 }}\n\
             train {{ steps = 1  batch = 8 seqs }}\nplan {{ threads = 1  shards = {shards} }}\n"
        );
        let spec = crate::spec::parse(&text, "t", std::path::Path::new("."), &[]).unwrap();
        crate::plan::plan(&spec).unwrap()
    }

    #[test]
    fn threads_past_the_shards_leave_the_row_steps_serial() {
        let rates = ThreadRates {
            flops_per_s: 1e10,
            bytes_per_s: 1e10,
        };
        let one_shard = plan(1);
        let at = |n| predict(&one_shard, 1, rates, n);
        assert_eq!(at(1).efficiency, 1.0);
        // One shard: one worker, the products split, the row steps do not.
        assert!(at(2).step_s < at(1).step_s && at(64).step_s < at(2).step_s);
        assert_eq!(at(1).serial_s, at(64).serial_s);
        assert!(at(64).efficiency < at(2).efficiency);
        // Eight shards: eight workers share the row steps too, until the shards run out.
        let eight = plan(8);
        let at = |n| predict(&eight, 1, rates, n);
        assert!((at(8).serial_s - at(1).serial_s / 8.0).abs() < 1e-12);
        assert_eq!(at(8).serial_s, at(128).serial_s);
        assert!(at(8).efficiency > predict(&one_shard, 1, rates, 8).efficiency);
    }
}

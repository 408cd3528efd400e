//! `cllm plan --threads N`: the step time the plan predicts on 1…128 threads of one
//! process, from its per-step costs and how far each of its steps splits over threads.
//!
//! A step of the kernel IR takes t = max(FLOPs / F, bytes / B) on one thread (F one
//! thread's FLOP rate, B one thread's memory bandwidth). On N threads the runtime has
//! W = min(N, S) workers, each running ⌈S/W⌉ shards × A micro-batches in turn, and
//! gives each worker g = ⌊N/W⌋ threads. A step split into parts takes as long as its
//! largest part, a share s of t: a matrix product splits its output columns into parts
//! a micro-tile multiple wide (`sgemm::column_split`: GPT-2's 768 columns make at most
//! 24 parts of 32), then its rows into blocks of 96 with the threads left over
//! (`sgemm::row_split`), attention its B·H heads, whole; a row step (LayerNorm, GELU,
//! residual, embedding, softmax + cross-entropy, their backward) its rows into
//! min(g, elements / 4096) parts (`cllm_kernels::rows`: no part under 16 KiB). Under
//! `plan.gemm = jit` neither products nor row steps split (Cranelift's loops run on the
//! worker's thread); attention, native either way, still does. Then the gradient
//! sum's additions (`grads.rs`: a worker's after its shards, the rest over every
//! thread) and AdamW (7 streams of P floats, over every thread):
//!
//!   step(N)     = ⌈S/W⌉·A·Σ s·t + worker additions + last additions/N + AdamW/N
//!   efficiency  = step(1) / (N · step(N))
//!
//! `unsplit` is what the steps cost beyond an even split over g threads:
//! ⌈S/W⌉·A·Σ (s − 1/g)·t.
//!
//! What it leaves out, and so where it is optimistic: the memory bandwidth is taken to
//! grow with the threads (a real socket saturates), threads to be cores (no SMT, no
//! oversubscription), and a split to divide evenly and cost nothing to start.

use super::Plan;
use super::grads;
use crate::plan::ir::StepCall;

/// One row: the predicted step on `threads` threads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThreadPrediction {
    pub threads: usize,
    pub step_s: f64,
    /// Of `step_s`, what the workers' steps take beyond an even split over their
    /// threads (steps too small to split, or Cranelift row loops).
    pub unsplit_s: f64,
    pub efficiency: f64,
}

/// One thread's rates: FLOP/s and bytes/s.
#[derive(Clone, Copy, Debug)]
pub struct ThreadRates {
    pub flops_per_s: f64,
    pub bytes_per_s: f64,
}

/// The share of a step's one-thread time its longest part takes when it splits over a
/// worker's `threads` threads (1/threads for a perfect split, 1 for none).
fn longest_share(step: &StepCall, threads: usize, native: bool) -> f64 {
    use cllm_kernels::gemm::sgemm::product_share;
    // A split of `count` items into `parts` contiguous parts: the largest part's share.
    let even =
        |count: usize, parts: usize| count.div_ceil(parts.max(1)) as f64 / count.max(1) as f64;
    let rows = |count: usize, width: usize| match native {
        true => even(count, cllm_kernels::rows::parts_on(threads, count, width)),
        false => 1.0,
    };
    // Native products (m × n) split their output columns in micro-tile multiples, then
    // rows with the threads left over (`sgemm.rs`); Cranelift's, inline, do not split.
    let product = |m: usize, n: usize| match native {
        true => product_share(m, n, threads),
        false => 1.0,
    };
    match step {
        StepCall::Matmul { rows: r, oc, .. } => product(*r, *oc),
        // Two products of equal FLOPs: dinp (rows × c) and dweight (oc × c).
        StepCall::MatmulBackward { rows: r, c, oc, .. } => {
            0.5 * (product(*r, *c) + product(*oc, *c))
        }
        // Heads spread over the threads, whole.
        StepCall::Attention { shape, .. } | StepCall::AttentionBackward { shape, .. } => {
            even(shape.batch * shape.heads, threads)
        }
        StepCall::LayerNorm { rows: r, c, .. } | StepCall::LayerNormBackward { rows: r, c, .. } => {
            rows(*r, *c)
        }
        StepCall::Gelu { n, .. }
        | StepCall::GeluBackward { n, .. }
        | StepCall::Residual { n, .. }
        | StepCall::ResidualBackward { n, .. } => rows(*n, 1),
        StepCall::SoftmaxXent { rows: r, v, .. }
        | StepCall::SoftmaxXentBackward { rows: r, v, .. } => rows(*r, *v),
        StepCall::Embedding { batch, t, c, .. }
        | StepCall::EmbeddingBackward { batch, t, c, .. } => rows(batch * t, *c),
        _ => 1.0,
    }
}

/// How N threads are used: (workers, shard passes each runs in turn, threads each).
fn layout(plan: &Plan, accumulate: usize, threads: usize) -> (usize, usize, usize) {
    let workers = threads.min(plan.shards).max(1);
    let per_worker = plan.shards.div_ceil(workers) * accumulate;
    (workers, per_worker, (threads / workers).max(1))
}

/// Every step of one shard pass with its one-thread seconds t and the share of t its
/// largest part takes on a worker's `threads` threads.
fn step_shares(
    plan: &Plan,
    rates: ThreadRates,
    threads: usize,
) -> impl Iterator<Item = (&StepCall, f64, f64)> {
    let native = plan.gemm == crate::spec::Gemm::Native;
    plan.kernels.iter().flat_map(|k| &k.steps).map(move |step| {
        let (flops, bytes) = super::cost::kernel_cost(&plan.graph, std::slice::from_ref(step));
        let t = (flops as f64 / rates.flops_per_s).max(bytes as f64 / rates.bytes_per_s);
        (step, t, longest_share(step, threads, native))
    })
}

/// What does not split evenly on `threads` threads: per step kind, the seconds a step
/// takes beyond an even split over its worker's threads, largest first (the kinds that
/// serialise; empty when every step splits evenly).
pub fn unsplit_kinds(
    plan: &Plan,
    accumulate: usize,
    rates: ThreadRates,
    threads: usize,
) -> Vec<(String, f64)> {
    let (_, per_worker, g) = layout(plan, accumulate, threads);
    let mut kinds: Vec<(String, f64)> = Vec::new();
    for (step, t, share) in step_shares(plan, rates, g) {
        let extra = per_worker as f64 * t * (share - 1.0 / g as f64);
        let kind = step.kind();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, s)) => *s += extra,
            None => kinds.push((kind, extra)),
        }
    }
    kinds.retain(|(_, s)| *s > 1e-9);
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    kinds
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
        unsplit_s: at.1,
    }
}

/// (seconds, of them what exceeds an even split) of a step on `threads` threads.
fn step_on(plan: &Plan, accumulate: usize, rates: ThreadRates, threads: usize) -> (f64, f64) {
    let shards = plan.shards;
    let (workers, per_worker, g) = layout(plan, accumulate, threads);
    let (mut pass_s, mut unsplit) = (0.0, 0.0);
    for (_, t, share) in step_shares(plan, rates, g) {
        pass_s += t * share;
        unsplit += t * (share - 1.0 / g as f64);
    }
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
    let compute = per_worker as f64 * pass_s;
    (
        compute + worker_adds + last + adamw,
        per_worker as f64 * unsplit,
    )
}

#[cfg(test)]
mod tests {
    use super::{ThreadRates, predict};

    fn plan(shards: u64, gemm: &str) -> crate::plan::Plan {
        let text = format!(
            "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 50) }}\n\
             model gpt {{ context = 64 tokens  width = 64  layers = 2  heads = 2 }}\n\
             train {{ steps = 1  batch = 8 seqs }}\n\
             plan {{ threads = 1  shards = {shards}  gemm = {gemm} }}\n"
        );
        let spec = crate::spec::parse(&text, "t", std::path::Path::new("."), &[]).unwrap();
        crate::plan::plan(&spec).unwrap()
    }

    const RATES: ThreadRates = ThreadRates {
        flops_per_s: 1e10,
        bytes_per_s: 1e10,
    };

    #[test]
    fn threads_past_the_shards_split_the_row_steps_as_far_as_they_go() {
        let one_shard = plan(1, "native");
        let at = |n| predict(&one_shard, 1, RATES, n);
        assert_eq!(at(1).efficiency, 1.0);
        assert_eq!(at(1).unsplit_s, 0.0);
        // One shard: one worker, its products and its row steps split; the row steps
        // (512 rows of 64 channels: at most 8 parts of 4 096 floats) stop splitting
        // before the products do.
        assert!(at(2).step_s < at(1).step_s && at(64).step_s < at(2).step_s);
        assert_eq!(
            at(2).unsplit_s,
            0.0,
            "every step of one shard splits in two"
        );
        assert!(at(64).unsplit_s > at(8).unsplit_s);
        assert!(at(64).efficiency < at(2).efficiency);
        // Cranelift's loops (`plan.gemm = jit`) do not split at all.
        let jit = plan(1, "jit");
        let jit_at = |n| predict(&jit, 1, RATES, n);
        assert!(jit_at(2).unsplit_s > 0.0 && jit_at(8).step_s > at(8).step_s);
        // Eight shards: eight workers of one thread each split nothing, until there
        // are spare threads again.
        // What does not split: at 64 threads the steps too small for 64 parts.
        let kinds = super::unsplit_kinds(&one_shard, 1, RATES, 64);
        let sum: f64 = kinds.iter().map(|(_, s)| s).sum();
        assert!((sum - at(64).unsplit_s).abs() < 1e-9 * sum, "{kinds:?}");
        assert!(kinds.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(super::unsplit_kinds(&one_shard, 1, RATES, 2).is_empty());
        let eight = plan(8, "native");
        let at = |n| predict(&eight, 1, RATES, n);
        assert_eq!(at(8).unsplit_s, 0.0);
        assert!(
            at(16).step_s < at(8).step_s,
            "the products split over the spare threads"
        );
    }
}

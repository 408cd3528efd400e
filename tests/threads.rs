//! The same bits on any thread count: losses after every step and the final
//! parameters and AdamW moments are identical for 1, 2, 3, 5 and 16 threads (8 shards:
//! each thread count cuts them into other worker blocks, groups and pairs of the
//! gradient tree, `plan/grads.rs`; 16 runs oversubscribed, 8 workers and GEMMs split
//! over the rest), and from run to run; and the check has teeth: a different shard
//! count does change the bits. One shard on many threads splits the row passes too.

use std::path::Path;

use cllm::runtime::{self, Backend, RunOptions};
use cllm::spec;

mod common;

/// (loss bits of every step, every checkpoint tensor's bytes by name).
type Outcome = (Vec<u64>, Vec<(String, Vec<u8>)>);

fn train(backend: Backend, threads: u64, shards: u64) -> Outcome {
    let text = format!(
        "cllm 0.1\n\
         data {{ source = addition(digits = 2, held_out = 100) }}\n\
         model gpt {{ context = 10 tokens  width = 32  layers = 2  heads = 2 }}\n\
         train {{ steps = 8  batch = 16 seqs  accumulate = 2  optimizer = adamw(lr = 3e-3)  clip_grad = 0.5 }}\n\
         eval {{ every = 1000 steps  batches = 2 }}\n\
         plan {{ threads = {threads}  shards = {shards} }}\n"
    );
    let spec = spec::parse(&text, "threads", Path::new("specs"), &[])
        .unwrap_or_else(|e| panic!("{}", spec::render_plain(&e)));
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        quiet: true,
        backend,
        ..RunOptions::new(dir.path(), "specs")
    };
    let summary = runtime::train(&spec, &options).expect("trains");
    let bytes = std::fs::read(&summary.checkpoint).unwrap();
    let stored = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<u8>)> = stored
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    tensors.sort();
    let losses = summary.losses.iter().map(|l| l.to_bits()).collect();
    (losses, tensors)
}

on_both_backends! {
fn every_thread_count_gives_the_same_bits(backend) {
    let one = train(backend, 1, 8);
    // 28 parameters of a 2-layer GPT (wte, wpe, 12 per layer, ln_f), each with m and v.
    assert_eq!(one.1.len(), 3 * 28, "parameters and both moments are compared");
    for threads in [2, 3, 5, 16] {
        let many = train(backend, threads, 8);
        assert!(one.0 == many.0, "{threads} threads changed the losses");
        for ((name, a), (_, b)) in one.1.iter().zip(&many.1) {
            assert!(a == b, "{threads} threads changed `{name}`");
        }
    }
    assert!(one == train(backend, 2, 8), "two runs on 2 threads differ");
}

fn the_check_can_see_rounding(backend) {
    // Another shard count sums the gradient in another order: close, not the same bits.
    let (four, two) = (train(backend, 2, 4), train(backend, 2, 2));
    assert_ne!(four.0, two.0);
    let (a, b) = (f64::from_bits(four.0[7]), f64::from_bits(two.0[7]));
    assert!((a - b).abs() < 1e-4 * a.abs(), "{a} vs {b}");
}
}

/// bench-xs (`specs/bench-xs.cllm`, the repository's tinyshakespeare) in bf16 for three
/// steps: the same checkpoint bits on 1 and 3 threads, and not fp32's bits (the
/// products did round), though close to them.
fn bench_xs(threads: u64, precision: &str) -> (Vec<u64>, Vec<(String, Vec<u32>)>) {
    bench_xs_on(threads, 8, precision)
}

fn bench_xs_on(threads: u64, shards: u64, precision: &str) -> (Vec<u64>, Vec<(String, Vec<u32>)>) {
    let sets = [
        format!("plan.shards={shards}"),
        "train.steps=3".to_string(),
        format!("train.precision={precision}"),
        format!("plan.threads={threads}"),
        "eval.every=1000".to_string(),
        "eval.batches=1".to_string(),
    ];
    let text = std::fs::read_to_string("specs/bench-xs.cllm").unwrap();
    let spec = spec::parse(&text, "bench-xs", Path::new("specs"), &sets)
        .unwrap_or_else(|e| panic!("{}", spec::render_plain(&e)));
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        quiet: true,
        ..RunOptions::new(dir.path(), "specs")
    };
    let summary = runtime::train(&spec, &options).expect("trains");
    let losses = summary.losses.iter().map(|l| l.to_bits()).collect();
    (losses, common::checkpoint_bits(dir.path()))
}

#[test]
fn bf16_bench_xs_gives_the_same_bits_on_one_and_three_threads() {
    let one = bench_xs(1, "bf16");
    assert!(
        one == bench_xs(3, "bf16"),
        "3 threads changed the bf16 bits"
    );
    let fp32 = bench_xs(3, "fp32");
    assert_ne!(one.0, fp32.0, "bf16 products gave fp32's losses");
    let (a, b) = (f64::from_bits(one.0[2]), f64::from_bits(fp32.0[2]));
    assert!((a - b).abs() < 1e-2 * a.abs(), "bf16 loss {a} vs fp32 {b}");
}

/// One shard on 2, 5 and 16 threads: every spare thread joins the one worker's GEMMs
/// (column parts, then row blocks), attention heads and row passes (LayerNorm, GELU, residual, embedding, softmax +
/// cross-entropy and their backward, `cllm_kernels::rows`) — and the bits are
/// 1 thread's.
#[test]
fn one_shard_gives_the_same_bits_with_its_rows_split_over_every_thread_count() {
    let one = bench_xs_on(1, 1, "fp32");
    for threads in [2, 5, 16] {
        assert!(
            one == bench_xs_on(threads, 1, "fp32"),
            "{threads} threads on one shard changed the bits"
        );
    }
    // bf16 products split their columns and row blocks over the threads the same way.
    assert!(
        bench_xs_on(1, 1, "bf16") == bench_xs_on(16, 1, "bf16"),
        "16 threads on one shard changed the bf16 bits"
    );
}

/// Threads a worker's kernels split over: all of them for one shard, one per worker
/// once there are as many shards as threads (what `cllm bench` divides a worker's
/// kernel time by for a per-thread rate).
#[test]
fn a_worker_splits_its_kernels_over_the_threads_the_shards_leave() {
    for (threads, shards, split) in [(2, 1, 2), (16, 1, 16), (4, 2, 2), (2, 8, 1), (3, 8, 1)] {
        let text = format!(
            "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 100) }}\n\
             model gpt {{ context = 10 tokens  width = 16  layers = 1  heads = 2 }}\n\
             train {{ batch = 8 seqs }}\nplan {{ threads = {threads}  shards = {shards} }}\n"
        );
        let spec = spec::parse(&text, "split", Path::new("specs"), &[]).unwrap();
        let machine = cllm::machine::Machine::<f32>::new(cllm::plan::plan(&spec).unwrap());
        let what = format!("{shards} shard(s) on {threads} threads");
        assert_eq!(machine.gemm_threads(), split, "{what}");
    }
}

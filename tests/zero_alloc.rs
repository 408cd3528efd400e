//! No allocation during a step: a counting global allocator sees none over 10 whole
//! training steps (data, forward and backward of every shard on two threads, the
//! shard-gradient sum, clipping, AdamW) after two warm-up steps, nor over 300 decoded
//! tokens (past the context, so the cache is rebuilt), each picked at a temperature.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cllm::rng::Rng;
use cllm::runtime::Backend;
use cllm::runtime::bench::StepLoop;
use cllm::runtime::sampler::{Sampler, Sampling};
use cllm::spec;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by 10 steps of `spec` (after 2 warm-up steps) with `overrides`.
fn allocations_per_10_steps(overrides: &[&str]) -> usize {
    let mut overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    overrides.push("plan.threads=2".into());
    let spec = spec::load(Path::new("specs/bench-xs.cllm"), &overrides).expect("the spec loads");
    let mut steps = StepLoop::new(&spec, Path::new("specs"), Backend::Jit).expect("compiles");
    let pool = steps.machine.pool();
    pool.install(|| {
        steps.step();
        steps.step();
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            std::hint::black_box(steps.step());
        }
        COUNTING.store(false, Ordering::SeqCst);
    });
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Allocations made by decoding 300 tokens of bench-xs at context 64 on two threads,
/// after the sampler is built and has seen one token.
fn allocations_per_300_tokens() -> usize {
    let overrides = ["model.context=64".to_string(), "plan.threads=2".into()];
    let spec = spec::load(Path::new("specs/bench-xs.cllm"), &overrides).expect("the spec loads");
    let steps = StepLoop::new(&spec, Path::new("specs"), Backend::Jit).expect("compiles");
    let machine = &steps.machine;
    let params = (0..machine.graph().params.len())
        .map(|i| machine.param(i))
        .collect();
    let mut sampler = Sampler::new(machine.graph(), machine.plan().arithmetic(), params)
        .expect("the decoder compiles");
    let sampling = Sampling {
        temperature: 0.9,
        top_k: Some(40),
        top_p: 0.95,
    };
    let mut rng = Rng::new(5);
    machine.pool().install(|| {
        sampler.feed(u32::from(b'A'));
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..300 {
            let next = sampler.next(sampling, &mut rng);
            std::hint::black_box(sampler.feed(next));
        }
        COUNTING.store(false, Ordering::SeqCst);
    });
    ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn a_step_allocates_nothing() {
    // The counter does see allocations, so the zero below is not vacuous. (One test
    // only: tests of a binary run in parallel and the counter is global.)
    COUNTING.store(true, Ordering::SeqCst);
    let v = std::hint::black_box(vec![1u8; 100]);
    COUNTING.store(false, Ordering::SeqCst);
    drop(v);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) >= 1);

    // Small enough for CI: bench-xs's shapes at context 64, batch 8 in 4 shards on two
    // threads, two micro-batches accumulated, with each GEMM back end. The native GEMM
    // packs into per-thread buffers allocated on a thread's first call (warm-up); so
    // do the bf16 units (AMX, AVX512-BF16 or emulated, whichever this CPU runs).
    for arithmetic in ["plan.gemm=native", "plan.gemm=jit", "train.precision=bf16"] {
        let count = allocations_per_10_steps(&[
            "model.context=64",
            "train.accumulate=2",
            "plan.shards=4",
            arithmetic,
        ]);
        assert_eq!(count, 0, "{arithmetic}: {count} allocations in 10 steps");
    }
    let count = allocations_per_300_tokens();
    assert_eq!(count, 0, "decoding: {count} allocations in 300 tokens");
}

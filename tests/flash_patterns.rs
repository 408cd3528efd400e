//! The tiled attention kernels on the tiles and masks the planner really builds, for
//! every kind of pattern (dense, window, strided, lattice on a grid and on Ulam's
//! spiral), at a context that is not a multiple of the block (a ragged last block) and
//! long enough that the sparse patterns get block-sparse lists, not the triangle:
//! forward output, saved log-sum-exp and backward against the masked reference.

use std::path::Path;

use cllm::plan;
use cllm::rng::Rng;
use cllm::spec;
use cllm_kernels::attention::{AttentionShape, attention_backward, attention_forward};
use cllm_kernels::bf16::Precision;
use cllm_kernels::ir::Step;
use cllm_kernels::jit::JitOptions;
use cllm_kernels::program::{KernelDesc, compile};

const CONTEXT: usize = 600;
const WIDTH: usize = 64;
const HEADS: usize = 2;
const BATCH: usize = 2;

#[test]
fn every_pattern_matches_the_masked_reference_on_the_planned_tiles() {
    for attention in [
        "dense",
        "window(24)",
        "strided(256, 16)",
        "primes(window = 8)",
        "lattice(grid(16), radius = 2, window = 16)",
        "lattice(ulam, radius = 1.5, window = 4)",
    ] {
        check(attention);
    }
}

fn check(attention: &str) {
    let text = format!(
        "cllm 0.1\ndata {{ source = text(\"data/tinyshakespeare.txt\") }}\n\
         model gpt {{ context = {CONTEXT} tokens  width = {WIDTH}  layers = 1  heads = {HEADS}  attention = {attention} }}\n\
         train {{ batch = {BATCH} seqs }}\nplan {{ shards = 1 }}"
    );
    let spec = spec::parse(&text, "patterns", Path::new("specs"), &[]).unwrap();
    let plan = plan::plan(&spec).unwrap();
    let blocks = plan.attention_blocks.clone();
    assert!(
        !CONTEXT.is_multiple_of(blocks.block),
        "{attention}: the last block must be ragged"
    );
    if attention.starts_with("window") || attention.starts_with("strided") {
        assert!(
            !blocks.is_causal(),
            "{attention}: expected block-sparse lists"
        );
    }
    let keep = plan.pattern.as_ref().map(|p| p.mask());
    let shape = AttentionShape {
        batch: BATCH,
        t_len: CONTEXT,
        channels: WIDTH,
        heads: HEADS,
    };
    let mut rng = Rng::new(11);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let n = BATCH * CONTEXT;
    let qkv = random(n * 3 * WIDTH);
    let dout = random(n * WIDTH);
    let (mut out, mut lse) = (
        vec![f32::NAN; n * WIDTH],
        vec![f32::NAN; BATCH * HEADS * CONTEXT],
    );
    run(Step::Attention {
        shape,
        blocks: blocks.clone(),
        precision: Precision::Fp32,
        out: ptr(&mut out),
        lse: ptr(&mut lse),
        qkv: ptr_const(&qkv),
        keep: keep.as_deref().map(ptr_const),
    });
    let (mut r_out, mut r_lse) = (vec![0.0; out.len()], vec![0.0; lse.len()]);
    attention_forward(
        &mut r_out,
        &mut r_lse,
        &qkv,
        keep.as_deref(),
        shape,
        Precision::Fp32,
    );
    close(attention, "out", &out, &r_out);
    close(attention, "lse", &lse, &r_lse);

    let mut dqkv = vec![0.0; qkv.len()];
    run(Step::AttentionBackward {
        shape,
        blocks: blocks.clone(),
        precision: Precision::Fp32,
        dqkv: ptr(&mut dqkv),
        dout: ptr_const(&dout),
        qkv: ptr_const(&qkv),
        out: ptr_const(&out),
        lse: ptr_const(&lse),
        keep: keep.as_deref().map(ptr_const),
    });
    let mut r_dqkv = vec![0.0; qkv.len()];
    attention_backward(
        &mut r_dqkv,
        &dout,
        &qkv,
        keep.as_deref(),
        shape,
        Precision::Fp32,
    );
    close(attention, "dqkv", &dqkv, &r_dqkv);
    eprintln!(
        "{attention}: {} tiles of {} (causal triangle: {})",
        blocks.lists.iter().map(Vec::len).sum::<usize>(),
        blocks.block,
        blocks.is_causal()
    );
}

/// Compiles `step` alone and runs it on the buffers its slots point at.
fn run(step: Step<*mut u8>) {
    let desc = KernelDesc {
        name: "attention".into(),
        steps: vec![step.clone().numbered()],
    };
    let compiled = compile(&[desc], JitOptions::default()).expect("compiles");
    let args: Vec<*mut u8> = step.slots().into_iter().map(|(_, &p)| p).collect();
    // SAFETY: the buffers have the shapes the kernel was compiled for.
    unsafe { (compiled.functions[0])(args.as_ptr(), [0.0f64].as_ptr()) };
}

fn ptr(v: &mut [f32]) -> *mut u8 {
    v.as_mut_ptr() as *mut u8
}

fn ptr_const(v: &[f32]) -> *mut u8 {
    v.as_ptr() as *mut u8 // only read by the kernel
}

/// Elementwise within 1e-4 of the reference's rms (f32 sums over up to 600 keys against
/// f64; measured ≤ 3e-5).
fn close(attention: &str, what: &str, got: &[f32], want: &[f32]) {
    let rms = (want.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
    let worst = (got.iter().zip(want))
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max)
        / rms;
    eprintln!("{attention:<44} {what:<5} worst error {worst:.2e} of rms");
    assert!(
        worst <= 1e-4,
        "{attention}: {what} differs by {worst:.2e} of its rms"
    );
}

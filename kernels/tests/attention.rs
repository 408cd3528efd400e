//! Tiled (flash) attention, as the JIT calls it, against the masked reference: the
//! output, the saved log-sum-exp and the gradient, on random block-sparse patterns
//! (ragged T with a partial last block, several block sizes, random key-block lists
//! and a random mask inside the listed tiles), on the causal triangle (dense attention
//! as the plan runs it), and with runs longer than one chunk of keys.
//!
//! The products inside run on the CPU's widest micro-kernel; `.ci/run` runs this file
//! again with `CLLM_ISA=avx2` (and `portable`) so every path this CPU has is checked.

mod common;
use common::*;

use cllm_kernels::attention::{AttentionShape as StepShape, BlockLists as StepBlocks};
use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::attention::{
    AttentionShape, attention_backward, attention_forward, emit_attention_backward,
    emit_attention_forward,
};
use cllm_kernels::attention::{BlockLists, CHUNK};
use cllm_kernels::bf16::Precision;

const FP32: Precision = Precision::Fp32;

/// Random lists (the diagonal always in) and a mask that keeps only keys inside
/// listed tiles (the diagonal always kept).
fn random_pattern(rng: &mut Lcg, t_len: usize, block: usize, full: bool) -> (BlockLists, Vec<f32>) {
    let n = t_len.div_ceil(block);
    let lists: Vec<Vec<usize>> = (0..n)
        .map(|qb| {
            (0..=qb)
                .filter(|&kb| kb == qb || full || rng.next() > 0.2)
                .collect()
        })
        .collect();
    let mut keep = vec![0.0f32; t_len * t_len];
    for t in 0..t_len {
        for &kb in &lists[t / block] {
            for t2 in kb * block..((kb + 1) * block).min(t + 1) {
                keep[t * t_len + t2] = (t2 == t || full || rng.next() > -0.6) as u8 as f32;
            }
        }
    }
    (BlockLists { block, lists }, keep)
}

#[test]
fn block_sparse_attention_matches_the_masked_reference() {
    for (t_len, block, channels, heads, full) in [
        (70, 16, 8, 2, false),
        (64, 16, 12, 3, false),
        (33, 8, 8, 1, false),
        (48, 16, 8, 2, true),
        (17, 64, 8, 2, false),
        (300, 32, 16, 2, false),
    ] {
        let mut rng = Lcg((t_len * block + channels) as u64);
        let (blocks, keep) = random_pattern(&mut rng, t_len, block, full);
        check(
            &mut rng,
            t_len,
            (channels, heads),
            &blocks,
            Some(keep),
            FP32,
        );
    }
}

#[test]
fn causal_triangle_attention_matches_the_dense_reference() {
    for (t_len, block, channels, heads) in [
        (70, 32, 8, 2),
        (33, 16, 12, 3),
        (256, 32, 16, 2),
        (5, 64, 8, 2),
        (600, 64, 32, 2),
    ] {
        let mut rng = Lcg((t_len * block + channels) as u64 + 7);
        let blocks = BlockLists::causal(t_len, block);
        check(&mut rng, t_len, (channels, heads), &blocks, None, FP32);
    }
}

#[test]
fn long_runs_are_cut_into_chunks_in_order() {
    let blocks = BlockLists::causal(600, 64);
    assert_eq!(blocks.chunks(600, 0), vec![(0, 64)]);
    // Query block 9 sees keys 0..600: chunks of at most CHUNK columns, contiguous.
    let chunks = blocks.chunks(600, 9);
    assert!(chunks.iter().all(|&(_, n)| n <= CHUNK));
    let covered: Vec<usize> = chunks.iter().flat_map(|&(c0, n)| c0..c0 + n).collect();
    assert_eq!(covered, (0..600).collect::<Vec<_>>());
    // A gap between listed blocks starts a new chunk.
    let sparse = BlockLists {
        block: 16,
        lists: vec![vec![0], vec![1], vec![0, 2]],
    };
    assert_eq!(sparse.chunks(40, 2), vec![(0, 16), (32, 8)]);
}

/// Forward (out and lse) and backward of the JIT-called kernels against the
/// reference, with `keep` as the mask (None: causal only), the products in
/// `precision` (bf16: to the tolerances of [`assert_bf16_attention`]).
fn check(
    rng: &mut Lcg,
    t_len: usize,
    (channels, heads): (usize, usize),
    blocks: &BlockLists,
    keep: Option<Vec<f32>>,
    precision: Precision,
) {
    let batch = 2;
    let shape = AttentionShape {
        batch,
        t_len,
        channels,
        heads,
    };
    let hs = channels / heads;
    let masked = keep.is_some();
    let keep = keep.unwrap_or_default();
    let qkv = rng.vec(batch * t_len * 3 * channels, 1.0);
    let dout = rng.vec(batch * t_len * channels, 1.0);
    let d0 = rng.vec(qkv.len(), 1.0);
    let kernel = run_kernels(
        shape,
        blocks,
        masked.then_some(&keep[..]),
        precision,
        [&qkv, &dout, &d0],
    );
    let (mut r_out, mut r_lse) = (vec![0.0; kernel.out.len()], vec![0.0; kernel.lse.len()]);
    let keep = masked.then_some(&keep[..]);
    attention_forward(&mut r_out, &mut r_lse, &qkv, keep, shape, precision);
    let mut r_dqkv = d0;
    attention_backward(&mut r_dqkv, &dout, &qkv, keep, shape, precision);
    let name = format!(
        "T {t_len}, blocks of {}, masked {masked}, {precision:?}",
        blocks.block
    );
    // The scores are sums of the same exact products in both (q and k rounded alike):
    // the log-sum-exp holds to fp32's tolerance in either precision.
    assert_kernel_matches(&format!("{name}: lse"), &kernel.lse, &r_lse, hs);
    match precision {
        Precision::Fp32 => {
            assert_kernel_matches(&format!("{name}: out"), &kernel.out, &r_out, t_len * hs);
            let name = format!("{name}: backward");
            assert_kernel_matches(&name, &kernel.dqkv, &r_dqkv, t_len * hs);
        }
        Precision::Bf16 => {
            assert_bf16_attention(&name, &kernel, (&r_out, &r_dqkv));
        }
    }
}

/// What the JIT-called kernels gave.
struct Kernels {
    out: Vec<f32>,
    lse: Vec<f32>,
    dqkv: Vec<f32>,
}

/// The JIT's forward and backward on `qkv`, `dout`, and `dqkv` starting at `d0`.
fn run_kernels(
    shape: AttentionShape,
    blocks: &BlockLists,
    keep: Option<&[f32]>,
    precision: Precision,
    [qkv, dout, d0]: [&[f32]; 3],
) -> Kernels {
    let masked = keep.is_some();
    let (mut qkv, mut dout) = (qkv.to_vec(), dout.to_vec());
    let mut keep = keep.unwrap_or_default().to_vec();
    let call_shape = (shape, precision);
    let compiled = compile(3 + masked as usize, |e, p| {
        let keep = masked.then(|| p[3]);
        emit_attention_forward(e, [p[0], p[1], p[2]], keep, call_shape, blocks)
    });
    let mut out = vec![f32::NAN; dout.len()];
    let mut lse = vec![f32::NAN; shape.batch * shape.heads * shape.t_len];
    let mut args = vec![ptr(&mut out), ptr(&mut lse), ptr(&mut qkv)];
    if masked {
        args.push(ptr(&mut keep));
    }
    call(&compiled, &mut args, &[]);
    let compiled = compile(5 + masked as usize, |e, p| {
        let keep = masked.then(|| p[5]);
        emit_attention_backward(e, [p[0], p[1], p[2], p[3], p[4]], keep, call_shape, blocks)
    });
    let mut dqkv = d0.to_vec();
    let mut args = vec![
        ptr(&mut dqkv),
        ptr(&mut dout),
        ptr(&mut qkv),
        ptr(&mut out),
        ptr(&mut lse),
    ];
    if masked {
        args.push(ptr(&mut keep));
    }
    call(&compiled, &mut args, &[]);
    Kernels { out, lse, dqkv }
}

/// The bf16 kernels against the bf16 reference. Both round q, k, v and dO alike, and
/// their sums of exact products of bf16 values differ by fp32 rounding only; what
/// differs is where the probabilities are rounded. The kernel rounds the forward's
/// probabilities relative to the running row maximum (`exp(s − m)`, normalised after
/// P·V), the reference the normalised ones: each term of `out = Σ_j p_j·v_j` then
/// carries two roundings of at most 2⁻⁹ relative, so `|Δout| ≤ 2⁻⁸·Σ_j p_j·|v_j| ≤
/// 2⁻⁸·max|v|` (max|v| ≤ 1 here). The backward's differences come from that ΔO
/// (through `D = dO·O`) and from P and dS rounding to a neighbouring bf16 where the two
/// sides' fp32 values straddle a rounding boundary (one bf16 step, ≤ 2⁻⁷ relative, on
/// a few terms): bounded normwise, 2⁻⁶ relative to the gradient's norm over each of
/// dq, dk, dv, measured ≈ 2⁻¹⁰.
fn assert_bf16_attention(name: &str, kernel: &Kernels, (r_out, r_dqkv): (&[f32], &[f32])) {
    let worst = kernel
        .out
        .iter()
        .zip(r_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "{name}: out worst |error| {worst:.2e} (allowed 2^-8 = {:.2e})",
        2f32.powi(-8)
    );
    assert!(worst <= 2f32.powi(-8), "{name}: out differs by {worst:e}");
    let error = relative_l2(&kernel.dqkv, r_dqkv);
    eprintln!(
        "{name}: dqkv relative L2 error {error:.2e} (allowed 2^-6 = {:.2e})",
        2f64.powi(-6)
    );
    assert!(
        error <= 2f64.powi(-6),
        "{name}: dqkv relative error {error:e}"
    );
}

/// ‖a − b‖ / ‖b‖.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-300)).sqrt()
}

/// bf16 (`train.precision = bf16`): the kernels on every route this CPU takes — a
/// matrix unit's bf16 panels (blocks of a multiple of 32), the emulated unit's rounded
/// fp32 panels (blocks of 16 and 8, and every block on a CPU without a unit), plain
/// products (`CLLM_ISA=portable`) — against the reference rounding the same operands.
/// CI reruns this file with `CLLM_ISA=avx512bf16` and `avx512`.
#[test]
fn bf16_attention_matches_the_rounded_reference() {
    for (t_len, block, channels, heads) in [
        (256, 32, 128, 2),
        (300, 64, 96, 2),
        (70, 32, 40, 2),
        (33, 16, 12, 3),
        (600, 64, 64, 1),
    ] {
        let mut rng = Lcg((t_len * block + channels) as u64 + 11);
        let blocks = BlockLists::causal(t_len, block);
        check(
            &mut rng,
            t_len,
            (channels, heads),
            &blocks,
            None,
            Precision::Bf16,
        );
    }
    let mut rng = Lcg(5);
    let (blocks, keep) = random_pattern(&mut rng, 200, 32, false);
    check(&mut rng, 200, (64, 2), &blocks, Some(keep), Precision::Bf16);
}

/// The bf16 kernels read every operand rounded: q, k, v and dO given already rounded
/// give the same bits (rounding is idempotent), where fp32 kernels do not. Fails if a
/// product reads an operand unrounded, or truncates instead of rounding.
#[test]
fn bf16_attention_reads_its_operands_rounded() {
    let (t_len, channels, heads) = (130, 64, 2);
    let shape = AttentionShape {
        batch: 2,
        t_len,
        channels,
        heads,
    };
    for block in [32, 16] {
        let blocks = BlockLists::causal(t_len, block);
        let mut rng = Lcg(block as u64);
        let qkv = rng.vec(2 * t_len * 3 * channels, 1.0);
        let dout = rng.vec(2 * t_len * channels, 1.0);
        let d0 = vec![0.0; qkv.len()];
        let rounded = |x: &[f32]| {
            x.iter()
                .map(|&v| Precision::Bf16.operand(v))
                .collect::<Vec<_>>()
        };
        let (qkv_r, dout_r) = (rounded(&qkv), rounded(&dout));
        for precision in [Precision::Bf16, FP32] {
            let a = run_kernels(shape, &blocks, None, precision, [&qkv, &dout, &d0]);
            let b = run_kernels(shape, &blocks, None, precision, [&qkv_r, &dout_r, &d0]);
            let same =
                |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits());
            let all = same(&a.out, &b.out) && same(&a.lse, &b.lse) && same(&a.dqkv, &b.dqkv);
            assert_eq!(
                all,
                precision == Precision::Bf16,
                "blocks of {block}, {precision:?}"
            );
        }
    }
}

// ── The reference's gradient against finite differences ─────────────────────

#[test]
fn attention_gradients() {
    for (batch, t_len, channels, heads) in [(2, 5, 6, 2), (1, 7, 4, 1), (1, 3, 9, 3)] {
        let shape = AttentionShape {
            batch,
            t_len,
            channels,
            heads,
        };
        let mut rng = Lcg(batch as u64 * 7 + t_len as u64);
        let qkv = rng.vec_f64(batch * t_len * 3 * channels);
        let w = rng.vec_f64(batch * t_len * channels);
        let lse_len = batch * heads * t_len;
        // Dense, and a sparse pattern: every other earlier key dropped (not the diagonal).
        let sparse: Vec<f64> = (0..t_len * t_len)
            .map(|i| ((i % t_len == i / t_len) || (i * 7 % 3 != 0)) as u8 as f64)
            .collect();
        for keep in [None, Some(sparse.as_slice())] {
            let forward = |qkv: &[f64]| {
                let (mut out, mut lse) = (vec![0.0; w.len()], vec![0.0; lse_len]);
                attention_forward(&mut out, &mut lse, qkv, keep, shape, FP32);
                (weighted(&out, &w), out)
            };
            if let Some(keep) = keep {
                // A dropped key has no influence on its query's output.
                let t = t_len - 1;
                let (_, before) = forward(&qkv);
                for t2 in (0..t).filter(|&t2| keep[t * t_len + t2] == 0.0) {
                    let mut moved = qkv.clone();
                    let at = (t2 * 3 + 1) * channels; // k and v of (b 0, t2)
                    moved[at..at + 2 * channels]
                        .iter_mut()
                        .for_each(|x| *x += 1.5);
                    let (_, after) = forward(&moved);
                    let row = t * channels..(t + 1) * channels;
                    assert_eq!(
                        before[row.clone()],
                        after[row],
                        "key {t2} was dropped for {t}"
                    );
                }
            }
            let mut dqkv = vec![0.0; qkv.len()];
            attention_backward(&mut dqkv, &w, &qkv, keep, shape, FP32);
            assert_gradient("attention.qkv", &qkv, &dqkv, |x| forward(x).0);
        }
    }
}

#[test]
fn attention_is_causal() {
    let shape = AttentionShape {
        batch: 1,
        t_len: 6,
        channels: 4,
        heads: 2,
    };
    let mut rng = Lcg(9);
    let mut qkv = rng.vec_f64(6 * 12);
    let run = |qkv: &[f64]| {
        let (mut out, mut lse) = (vec![0.0; 24], vec![0.0; 2 * 6]);
        attention_forward(&mut out, &mut lse, qkv, None, shape, FP32);
        out
    };
    let before = run(&qkv);
    // Changing the last position's k and v must not change any earlier output.
    for x in &mut qkv[5 * 12 + 4..6 * 12] {
        *x += 1.0;
    }
    let after = run(&qkv);
    assert_eq!(before[..5 * 4], after[..5 * 4]);
    assert_ne!(before[5 * 4..], after[5 * 4..]);
}

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(7, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        // (Attention's backward reads the forward's saved output and log-sum-exp, so it
        // is checked below with a forward first, not on random buffers.)
        let (batch, t, heads) = (pick(rng, 1, 3), pick(rng, 1, 40), pick(rng, 1, 3));
        let shape = StepShape {
            batch,
            t_len: t,
            channels: 8 * heads,
            heads,
        };
        let width = shape.channels;
        let step = Step::Attention {
            shape,
            blocks: StepBlocks::causal(t, t.min(8)),
            precision: FP32,
            out: batch * t * width,
            lse: batch * heads * t,
            qkv: batch * t * 3 * width,
            keep: None,
        };
        assert_step_matches(&name("attention"), step, 1, &none, t.max(8), rng);
    });
}

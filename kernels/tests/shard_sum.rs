//! The shard-gradient tree sum, JIT against reference: the sums bit for bit (both add
//! f32s in the same tree), Σ g² to the reduction tolerance, on ragged lengths and
//! every shard count from 1 to 9. And the native GEMM's intra-kernel split: the same
//! bits on 1, 2 and 3 threads, the property the parallel runtime relies on.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::gemm::sgemm::{cllm_sgemm, set_gemm_threads};
use cllm_kernels::shard_sum::{emit_shard_grad_sum, shard_grad_sum};

#[test]
fn shard_grad_sum_matches_bit_for_bit() {
    let mut rng = Lcg(5);
    for shards in 1..=9 {
        for len in [1, 3, 4, 7, 64, 4099, 9001] {
            let inputs: Vec<Vec<f32>> = (0..shards).map(|_| rng.vec(len, 1.0)).collect();
            let compiled = compile(shards, |e, p| emit_shard_grad_sum(e, p, len));
            let mut jit = inputs.clone();
            let mut pointers: Vec<*mut u8> = jit.iter_mut().map(|g| ptr(g)).collect();
            let jit_squares = call(&compiled, &mut pointers, &[]);
            let mut reference = inputs.clone();
            let mut parts: Vec<&mut [f32]> = reference.iter_mut().map(|g| &mut g[..]).collect();
            let reference_squares = shard_grad_sum(&mut parts);
            assert!(
                jit[0] == reference[0],
                "{shards} shards × {len}: sums differ"
            );
            assert!(
                jit[1..] == inputs[1..],
                "the other shards are left as they were"
            );
            let rtol = 1e-6 * (4.0 + len as f64 / 8.0);
            assert!(
                (jit_squares - reference_squares).abs() <= rtol * reference_squares,
                "{shards} × {len}: Σg² {jit_squares} vs {reference_squares}"
            );
        }
    }
    // The tree is the documented one: ((g0 + g1) + (g2 + g3)) + g4 for five shards.
    let big = 1e8f32;
    let mut g: Vec<Vec<f32>> = vec![vec![big], vec![1.0], vec![-big], vec![1.0], vec![1.0]];
    let mut parts: Vec<&mut [f32]> = g.iter_mut().map(|x| &mut x[..]).collect();
    shard_grad_sum(&mut parts);
    assert_eq!(g[0][0], ((big + 1.0) + (-big + 1.0)) + 1.0);
}

#[test]
fn native_gemm_gives_the_same_bits_on_any_thread_count() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut rng = Lcg(9);
    // (m, n, k): ragged, and large enough for the `gemm` crate to use its threads.
    for (m, n, k) in [
        (257, 383, 131),
        (512, 1152, 384),
        (1024, 384, 1536),
        (64, 1000, 250),
    ] {
        let (lhs, rhs) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
        let base = rng.vec(m * n, 1.0);
        let product = |threads: usize, transposed_rhs: bool| {
            let mut dst = base.clone();
            pool.install(|| {
                set_gemm_threads(threads);
                // rhs as (k×n) row-major, or read through strides as the transpose of an (n×k).
                let (rs, cs) = if transposed_rhs { (1, k) } else { (n, 1) };
                // SAFETY: the buffers hold these shapes.
                unsafe {
                    cllm_sgemm(
                        m as i64,
                        n as i64,
                        k as i64,
                        dst.as_mut_ptr(),
                        n as i64,
                        1,
                        lhs.as_ptr(),
                        k as i64,
                        1,
                        rhs.as_ptr(),
                        rs as i64,
                        cs as i64,
                        1,
                        0,
                        std::ptr::null(),
                    )
                };
                set_gemm_threads(1);
            });
            dst
        };
        for transposed in [false, true] {
            let one = product(1, transposed);
            for threads in [2, 3] {
                assert!(
                    one == product(threads, transposed),
                    "{m}×{n}×{k} (transposed rhs: {transposed}): {threads} threads changed the bits"
                );
            }
        }
    }
}

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`.
#[test]
fn steps_match_through_both_back_ends() {
    on_random_shapes(8, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let (shards, len) = (pick(rng, 1, 9), pick(rng, 1, 5000));
        let step = Step::ShardGradSum {
            len,
            grads: vec![len; shards],
        };
        assert_step_matches(&name("shard_grad_sum"), step, 1, &none, shards, rng);
    });
}

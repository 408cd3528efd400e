//! The shard-gradient tree sum, JIT against reference: the sums bit for bit (both add
//! f32s in the same tree), Σ g² to the reduction tolerance, on ragged lengths and
//! every shard count from 1 to 9.

mod common;
use common::*;

use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

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

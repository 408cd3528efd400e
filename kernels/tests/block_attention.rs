//! Block-sparse attention (JIT) against the masked reference on random patterns:
//! ragged T (a partial last block), several block sizes, random key-block lists and a
//! random mask inside the listed tiles; and dense causal attention as the plan runs it,
//! the causal triangle's tiles with no mask, against the unmasked reference.

mod common;
use common::*;

use cllm_kernels::attention::{AttentionShape, attention_backward, attention_forward};
use cllm_kernels::block_attention::{
    BlockLists, emit_block_attention_backward, emit_block_attention_forward,
};

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
    ] {
        let mut rng = Lcg((t_len * block + channels) as u64);
        let (blocks, keep) = random_pattern(&mut rng, t_len, block, full);
        check(&mut rng, t_len, channels, heads, &blocks, Some(keep));
    }
}

#[test]
fn causal_triangle_attention_matches_the_dense_reference() {
    for (t_len, block, channels, heads) in [(70, 32, 8, 2), (33, 16, 12, 3), (256, 32, 16, 2)] {
        let mut rng = Lcg((t_len * block + channels) as u64 + 7);
        let blocks = BlockLists::causal(t_len, block);
        check(&mut rng, t_len, channels, heads, &blocks, None);
    }
}

/// Forward (out and the listed tiles of att) and backward of the JIT kernels against
/// the reference, with `keep` as the mask (None: causal only).
fn check(
    rng: &mut Lcg,
    t_len: usize,
    channels: usize,
    heads: usize,
    blocks: &BlockLists,
    keep: Option<Vec<f32>>,
) {
    let block = blocks.block;
    {
        let shape = AttentionShape {
            batch: 2,
            t_len,
            channels,
            heads,
        };
        let masked = keep.is_some();
        let mut keep = keep.unwrap_or_default();
        let mut qkv = rng.vec(2 * t_len * 3 * channels, 1.0);
        let att_len = 2 * heads * t_len * t_len;
        let compiled = compile(4, |e, p| {
            let keep = masked.then_some(p[3]);
            emit_block_attention_forward(e, p[0], p[1], p[2], keep, shape, blocks)
        });
        let (mut out, mut att) = (
            vec![f32::NAN; 2 * t_len * channels],
            vec![f32::NAN; att_len],
        );
        call(
            &compiled,
            &mut [ptr(&mut out), ptr(&mut att), ptr(&mut qkv), ptr(&mut keep)],
            &[],
        );
        let (mut r_out, mut r_att) = (vec![0.0; out.len()], vec![0.0; att_len]);
        let mask = masked.then_some(&keep[..]);
        attention_forward(&mut r_out, &mut r_att, &qkv, mask, shape);
        let name = format!("T {t_len}, blocks of {block}, masked {masked}");
        assert_close(
            &format!("{name}: out"),
            &out,
            &r_out,
            t_len * channels / heads,
        );
        // Tiles outside the lists are never written: compare the listed ones.
        let listed = |i: usize| {
            let (t, t2) = ((i / t_len) % t_len, i % t_len);
            blocks.lists[t / block].contains(&(t2 / block))
        };
        let jit_att: Vec<f32> = (0..att_len)
            .filter(|&i| listed(i))
            .map(|i| att[i])
            .collect();
        let ref_att: Vec<f32> = (0..att_len)
            .filter(|&i| listed(i))
            .map(|i| r_att[i])
            .collect();
        assert_close(
            &format!("{name}: att"),
            &jit_att,
            &ref_att,
            channels / heads,
        );

        let mut dout = rng.vec(out.len(), 1.0);
        let d0 = rng.vec(qkv.len(), 1.0);
        let compiled = compile(5, |e, p| {
            emit_block_attention_backward(e, p[0], p[1], p[2], p[3], p[4], shape, blocks)
        });
        let mut dqkv = d0.clone();
        let mut workspace = vec![f32::NAN; t_len * t_len];
        // The JIT's own att (NaN outside the tiles, which it must never read).
        call(
            &compiled,
            &mut [
                ptr(&mut dqkv),
                ptr(&mut dout),
                ptr(&mut qkv),
                ptr(&mut att),
                ptr(&mut workspace),
            ],
            &[],
        );
        let mut r_dqkv = d0;
        attention_backward(&mut r_dqkv, &dout, &qkv, &r_att, shape);
        assert_close(
            &format!("{name}: backward"),
            &dqkv,
            &r_dqkv,
            t_len * channels / heads,
        );
    }
}

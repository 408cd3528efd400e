//! The native row passes (and the bias gradient) split over a worker's spare threads (`rows.rs`) without
//! changing a bit: each kernel, called directly on ragged shapes big enough to split,
//! gives the same output bits with 1, 2, 3, 7 and 16 GEMM threads (oversubscribed on a
//! 2-core machine; the split is checked to happen). That they compute the right thing
//! is the differential tests' job (`layernorm.rs`, …), which run them too.

mod common;
use common::Lcg;

use cllm_kernels::gemm::sgemm::set_gemm_threads;
use cllm_kernels::rows::parts;
use cllm_kernels::softmax_xent::IGNORE;

/// Output bits of `kernel` run with each thread count; asserts they agree and that
/// `(count, width)` — the kernel's split — does split at more than one thread.
fn same_bits_on_every_thread_count(
    name: &str,
    count: usize,
    width: usize,
    kernel: impl Fn() -> Vec<Vec<f32>>,
) {
    let bits = |outputs: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        outputs
            .iter()
            .map(|o| o.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    set_gemm_threads(1);
    let one = bits(kernel());
    for threads in [2, 3, 7, 16] {
        set_gemm_threads(threads);
        assert!(
            parts(count, width) > 1,
            "{name}: {threads} threads do not split"
        );
        assert!(
            one == bits(kernel()),
            "{name}: {threads} threads changed the bits"
        );
    }
    set_gemm_threads(1);
}

#[test]
fn layernorm_splits_without_changing_bits() {
    let (rows, c) = (300, 129);
    let mut rng = Lcg(1);
    let (inp, weight, bias) = (rng.vec(rows * c, 2.0), rng.vec(c, 1.0), rng.vec(c, 1.0));
    let (dout, dinp0, dw0) = (
        rng.vec(rows * c, 1.0),
        rng.vec(rows * c, 1.0),
        rng.vec(c, 1.0),
    );
    let forward = || {
        let (mut out, mut mean, mut rstd) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
        // SAFETY: every buffer is sized as the kernel's contract says.
        unsafe {
            cllm_kernels::layernorm::cllm_layernorm(
                out.as_mut_ptr(),
                mean.as_mut_ptr(),
                rstd.as_mut_ptr(),
                inp.as_ptr(),
                weight.as_ptr(),
                bias.as_ptr(),
                rows as i64,
                c as i64,
                1e-5,
            )
        };
        vec![out, mean, rstd]
    };
    same_bits_on_every_thread_count("layernorm", rows, c, forward);
    let saved = forward();
    let backward = || {
        let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), dw0.clone());
        // SAFETY: as above.
        unsafe {
            cllm_kernels::layernorm::cllm_layernorm_backward(
                dinp.as_mut_ptr(),
                dw.as_mut_ptr(),
                db.as_mut_ptr(),
                dout.as_ptr(),
                inp.as_ptr(),
                weight.as_ptr(),
                saved[1].as_ptr(),
                saved[2].as_ptr(),
                rows as i64,
                c as i64,
            )
        };
        vec![dinp, dw, db]
    };
    same_bits_on_every_thread_count("layernorm_backward rows", rows, c, backward);
    same_bits_on_every_thread_count("layernorm_backward columns", c, rows, backward);
}

#[test]
fn elementwise_passes_split_without_changing_bits() {
    let n = 30_001;
    let mut rng = Lcg(2);
    let (x, y, d0, d1) = (
        rng.vec(n, 3.0),
        rng.vec(n, 1.0),
        rng.vec(n, 1.0),
        rng.vec(n, 1.0),
    );
    use cllm_kernels::gelu::{cllm_gelu, cllm_gelu_backward};
    use cllm_kernels::residual::{cllm_residual, cllm_residual_backward};
    same_bits_on_every_thread_count("gelu and residual", n, 1, || {
        let (mut g, mut dg, mut r) = (vec![0.0; n], d0.clone(), vec![0.0; n]);
        let (mut da, mut db) = (d0.clone(), d1.clone());
        // SAFETY: every buffer holds n floats.
        unsafe {
            cllm_gelu(g.as_mut_ptr(), x.as_ptr(), n as i64);
            cllm_gelu_backward(dg.as_mut_ptr(), y.as_ptr(), x.as_ptr(), n as i64);
            cllm_residual(r.as_mut_ptr(), x.as_ptr(), y.as_ptr(), n as i64);
            cllm_residual_backward(da.as_mut_ptr(), db.as_mut_ptr(), y.as_ptr(), n as i64);
        }
        vec![g, dg, r, da, db]
    });
}

#[test]
fn softmax_xent_splits_without_changing_bits() {
    let (rows, v) = (97, 257);
    let mut rng = Lcg(3);
    let logits = rng.vec(rows * v, 8.0);
    let d0 = rng.vec(rows * v, 1.0);
    let targets: Vec<u32> = (0..rows)
        .map(|r| {
            if r % 11 == 5 {
                IGNORE
            } else {
                (r * 37 % v) as u32
            }
        })
        .collect();
    use cllm_kernels::softmax_xent::{cllm_softmax_xent, cllm_softmax_xent_backward};
    same_bits_on_every_thread_count("softmax_xent", rows, v, || {
        let (mut losses, mut probs, mut d) = (vec![0.0; rows], vec![0.0; rows * v], d0.clone());
        // SAFETY: every buffer is sized as the kernels' contracts say; targets < v.
        let total = unsafe {
            let total = cllm_softmax_xent(
                losses.as_mut_ptr(),
                probs.as_mut_ptr(),
                logits.as_ptr(),
                targets.as_ptr(),
                rows as i64,
                v as i64,
            );
            cllm_softmax_xent_backward(
                d.as_mut_ptr(),
                probs.as_ptr(),
                targets.as_ptr(),
                rows as i64,
                v as i64,
                0.01,
            );
            total
        };
        // The f64 total, as two f32 halves' bits (exactly).
        let high = total as f32;
        vec![losses, probs, d, vec![high, (total - high as f64) as f32]]
    });
}

#[test]
fn embedding_splits_without_changing_bits() {
    let (batch, t_len, c, vocab) = (3, 100, 67, 50);
    let positions = batch * t_len;
    let mut rng = Lcg(4);
    let (wte, wpe, dout) = (
        rng.vec(vocab * c, 1.0),
        rng.vec(t_len * c, 1.0),
        rng.vec(positions * c, 1.0),
    );
    let (dwte0, dwpe0) = (rng.vec(vocab * c, 1.0), rng.vec(t_len * c, 1.0));
    // Every token appears six times: the backward adds into each row repeatedly.
    let tokens: Vec<u32> = (0..positions).map(|n| (n * 7 % vocab) as u32).collect();
    use cllm_kernels::embedding::{cllm_embedding, cllm_embedding_backward};
    let run = || {
        let (mut out, mut dwte, mut dwpe) =
            (vec![0.0; positions * c], dwte0.clone(), dwpe0.clone());
        let [p, t, c] = [positions, t_len, c].map(|x| x as i64);
        // SAFETY: every buffer is sized as the kernels' contracts say; tokens < vocab.
        unsafe {
            cllm_embedding(
                out.as_mut_ptr(),
                tokens.as_ptr(),
                wte.as_ptr(),
                wpe.as_ptr(),
                p,
                t,
                c,
            );
            cllm_embedding_backward(
                dwte.as_mut_ptr(),
                dwpe.as_mut_ptr(),
                dout.as_ptr(),
                tokens.as_ptr(),
                p,
                t,
                c,
            );
        }
        vec![out, dwte, dwpe]
    };
    same_bits_on_every_thread_count("embedding", positions, c, run);
    same_bits_on_every_thread_count("embedding_backward columns", c, positions, run);
}

#[test]
fn bias_gradient_splits_without_changing_bits() {
    // Strips of 128 columns: 1 000 columns are 8 strips, the last ragged.
    let (rows, oc) = (40, 1000);
    let mut rng = Lcg(5);
    let (dout, dbias0) = (rng.vec(rows * oc, 1.0), rng.vec(oc, 1.0));
    let run = || {
        let mut dbias = dbias0.clone();
        // SAFETY: dbias holds oc floats, dout rows · oc.
        unsafe {
            cllm_kernels::matmul::cllm_bias_backward(
                dbias.as_mut_ptr(),
                dout.as_ptr(),
                rows as i64,
                oc as i64,
            )
        };
        vec![dbias]
    };
    same_bits_on_every_thread_count("bias gradient", oc.div_ceil(128), rows * 128, run);
}

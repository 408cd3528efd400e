//! One row through a linear layer: `out[o] = Σ_c x[c]·weight[o,c] + bias[o]`, the
//! product of decoding (one position at a time), where the weight is read once and the
//! FLOPs are few, so the memory system sets the speed. Output rows are split over the
//! rayon threads of the caller's pool in fixed blocks; each row is one dot product in
//! f32, 16 independent partial sums (whole vectors at 512 or 256 bits) added in a fixed
//! order, so the result does not depend on the thread count.

use rayon::prelude::*;

use crate::bf16::Precision;

/// Output rows per task: 64 rows of a 384-wide weight are 96 KiB.
const ROWS: usize = 64;
/// Partial sums per dot product.
const LANES: usize = 16;

/// `out = weight · x + bias` for `weight` (out.len(), x.len()), row-major, the
/// product in `precision` (bf16: both operands' elements rounded as they are read).
///
/// # Panics
/// If the lengths disagree.
pub fn matvec(
    out: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    precision: Precision,
) {
    let bf16 = precision == Precision::Bf16;
    let c = x.len();
    assert_eq!(weight.len(), out.len() * c, "weight is (out, in)");
    assert!(
        bias.is_none_or(|b| b.len() == out.len()),
        "one bias per output"
    );
    let task = |(block, rows): (usize, &mut [f32])| {
        let w = &weight[block * ROWS * c..][..rows.len() * c];
        crate::cpu::full_width!((rows: &mut [f32], x: &[f32], w: &[f32], bf16: bool) => {
            let r = |v: f32| if bf16 { crate::bf16::round(v) } else { v };
            let c = x.len();
            for (o, y) in rows.iter_mut().enumerate() {
                let row = &w[o * c..(o + 1) * c];
                let mut acc = [0.0f32; LANES];
                let (mut wr, mut xr) = (row.chunks_exact(LANES), x.chunks_exact(LANES));
                for (a, b) in (&mut wr).zip(&mut xr) {
                    for j in 0..LANES {
                        acc[j] = r(a[j]).mul_add(r(b[j]), acc[j]);
                    }
                }
                for (j, (a, b)) in wr.remainder().iter().zip(xr.remainder()).enumerate() {
                    acc[j] = r(*a).mul_add(r(*b), acc[j]);
                }
                // A fixed tree (lane j += lane j + w, w = 8, 4, 2, 1): the same bits on
                // every thread.
                let mut width = LANES;
                while width > 1 {
                    width /= 2;
                    for j in 0..width {
                        acc[j] += acc[j + width];
                    }
                }
                *y = acc[0];
            }
        });
        if let Some(b) = bias {
            let b = &b[block * ROWS..][..rows.len()];
            rows.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    };
    if out.len() <= ROWS {
        task((0, out));
    } else {
        out.par_chunks_mut(ROWS).enumerate().for_each(task);
    }
}

/// The sum of every element of `slices`, read as [`matvec`] reads a weight: in blocks
/// over the caller's rayon threads, at the CPU's full vector width. Timing it gives
/// decoding's bound, the speed at which these threads can read the weights from
/// wherever they sit.
pub fn sweep(slices: &[&[f32]]) -> f32 {
    const BLOCK: usize = ROWS * 1024;
    let block_sum = |block: &[f32]| {
        let mut total = 0.0;
        let sum = &mut total;
        crate::cpu::full_width!((block: &[f32], sum: &mut f32) => {
            let mut acc = [0.0f32; 4 * LANES];
            let chunks = block.chunks_exact(4 * LANES);
            let tail: f32 = chunks.remainder().iter().sum();
            for chunk in chunks {
                for j in 0..4 * LANES {
                    acc[j] += chunk[j];
                }
            }
            *sum = acc.iter().sum::<f32>() + tail;
        });
        total
    };
    slices
        .iter()
        .map(|s| s.par_chunks(BLOCK).map(block_sum).sum::<f32>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_f64_product_on_ragged_shapes_and_any_thread_count() {
        for (oc, c) in [(1, 1), (3, 17), (65, 40), (200, 384), (129, 33)] {
            let mut s = 1u64;
            let mut next = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            };
            let x: Vec<f32> = (0..c).map(|_| next()).collect();
            let w: Vec<f32> = (0..oc * c).map(|_| next()).collect();
            let b: Vec<f32> = (0..oc).map(|_| next()).collect();
            let mut out = vec![0.0; oc];
            matvec(&mut out, &x, &w, Some(&b), Precision::Fp32);
            for o in 0..oc {
                let want: f64 = (0..c)
                    .map(|i| x[i] as f64 * w[o * c + i] as f64)
                    .sum::<f64>()
                    + b[o] as f64;
                assert!(
                    (out[o] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{oc}×{c} row {o}"
                );
            }
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut again = vec![0.0; oc];
                pool.install(|| matvec(&mut again, &x, &w, Some(&b), Precision::Fp32));
                assert_eq!(again, out, "{threads} threads change the bits");
            }
        }
    }

    #[test]
    fn a_sweep_reads_every_element() {
        // Small integers: every order of addition gives the exact sum.
        let a: Vec<f32> = (0..200_003).map(|i| (i % 7) as f32).collect();
        let b: Vec<f32> = (0..77).map(|i| (i % 3) as f32).collect();
        let exact: f32 = a.iter().chain(&b).sum();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| sweep(&[&a, &b])), exact);
        }
    }
}

//! The Cranelift F32X4 GEMM (`plan.gemm = jit`) against the reference product on every
//! stride pattern and ragged shapes.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

#[test]
fn cranelift_gemm_matches_on_every_stride_pattern() {
    use cllm_kernels::gemm::cranelift::emit_gemm;
    NATIVE_GEMM.with(|n| n.set(false));
    // (m, n, k): full tiles, ragged edges, and smaller than one tile.
    for (m, n, k) in [(8, 16, 12), (13, 19, 7), (3, 5, 2), (33, 65, 31)] {
        let mut rng = Lcg((m * n * k) as u64);
        let (a, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
        let mut expected = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                expected[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum::<f64>() as f32;
            }
        }
        // lhs row-major or transposed; rhs row-major (broadcast tiles), transposed (dot tiles).
        let mut a_t = vec![0.0f32; m * k];
        for i in 0..m {
            for p in 0..k {
                a_t[p * m + i] = a[i * k + p];
            }
        }
        let mut b_t = vec![0.0f32; k * n];
        for p in 0..k {
            for j in 0..n {
                b_t[j * k + p] = b[p * n + j];
            }
        }
        let cases = [
            ("NN", false, false),
            ("TN", true, false),
            ("NT", false, true),
            ("TT", true, true),
        ];
        for (name, lhs_t, rhs_t) in cases {
            for accumulate in [false, true] {
                let lhs_strides = if lhs_t { (1, m) } else { (k, 1) };
                let rhs_strides = if rhs_t { (1, k) } else { (n, 1) };
                let compiled = compile(3, |e, p| {
                    emit_gemm(
                        e,
                        m,
                        n,
                        k,
                        (p[0], n, 1),
                        (p[1], lhs_strides.0, lhs_strides.1),
                        (p[2], rhs_strides.0, rhs_strides.1),
                        accumulate,
                    )
                });
                let start = rng.vec(m * n, 1.0);
                let mut dst = start.clone();
                let (mut lhs, mut rhs) = (
                    if lhs_t { a_t.clone() } else { a.clone() },
                    if rhs_t { b_t.clone() } else { b.clone() },
                );
                call(
                    &compiled,
                    &mut [ptr(&mut dst), ptr(&mut lhs), ptr(&mut rhs)],
                    &[],
                );
                let want: Vec<f32> = expected
                    .iter()
                    .zip(&start)
                    .map(|(x, s)| if accumulate { x + s } else { *x })
                    .collect();
                assert_kernel_matches(
                    &format!("gemm {name} {m}x{n}x{k} acc={accumulate}"),
                    &dst,
                    &want,
                    k,
                );
            }
        }
    }
    NATIVE_GEMM.with(|n| n.set(true));
}

//! The packed GEMM, every micro-kernel this CPU runs (AVX2 6 × 16; AVX-512 12 × 32),
//! against an f64 reference on ragged shapes that cross every blocking edge (MR = 6
//! and 12, NR = 16 and 32, KC = 256, MC = 132 and 960), every stride pattern (each
//! operand row- or column-major, a destination with a wider row stride), overwrite,
//! accumulate, the fused bias + GELU epilogue and the fused GELU-backward epilogue, and
//! k = 0. Tolerance as in every differential test:
//! `1e-6·(4 + K/8)` relative to max(|ref|, rms(ref)).

mod common;
use common::*;

use cllm_kernels::bf16::Precision;
use cllm_kernels::cpu::{self, Bf16Unit, Isa};
use cllm_kernels::gelu::{gelu, gelu_grad};
use cllm_kernels::gemm::packed::{Bf16, Epilogue, View, gemm, pack_panels, reads_panels};
use cllm_kernels::gemm::panels_len;

/// A (rows × cols) matrix stored row- or column-major.
fn view(data: &[f32], rows: usize, cols: usize, column_major: bool) -> View {
    let _ = rows;
    let (rs, cs) = if column_major {
        (1, rows as isize)
    } else {
        (cols as isize, 1)
    };
    View {
        ptr: data.as_ptr(),
        rs,
        cs,
    }
}

#[test]
fn avx2_micro_kernel_matches_the_reference() {
    matches_the_reference(Isa::Avx2, None);
}

#[test]
fn avx512_micro_kernel_matches_the_reference() {
    matches_the_reference(Isa::Avx512, None);
}

/// In bf16 the reference rounds each operand element to bf16 (nearest, ties to even)
/// and sums the exact products in f64; the GEMM's products of bf16 values are exact
/// too, so only the order of its fp32 sums differs: the fp32 tolerance holds, and a
/// GEMM that truncated, or rounded only one operand, is off by up to 2⁻⁸ relative.
#[test]
fn avx2_micro_kernel_matches_the_reference_in_bf16() {
    matches_the_reference(Isa::Avx2, Some(Bf16Unit::Emulated));
}

#[test]
fn avx512_micro_kernel_matches_the_reference_in_bf16() {
    matches_the_reference(Isa::Avx512, Some(Bf16Unit::Emulated));
}

#[test]
fn avx512bf16_micro_tile_matches_the_reference_in_bf16() {
    matches_the_reference(Isa::Avx512, Some(Bf16Unit::Avx512Bf16));
}

#[test]
fn amx_tiles_match_the_reference_in_bf16() {
    matches_the_reference(Isa::Avx512, Some(Bf16Unit::Amx));
}

fn matches_the_reference(isa: Isa, unit: Option<Bf16Unit>) {
    if unit.is_some_and(|u| !cpu::bf16_supported().contains(&u)) {
        eprintln!("this CPU (or Linux) gives this process no {unit:?}: not tested here");
        return;
    }
    let precision = match unit {
        Some(_) => Precision::Bf16,
        None => Precision::Fp32,
    };
    if !cpu::supports(isa) {
        eprintln!(
            "this CPU has no {}: its micro-kernel is not used here",
            isa.name()
        );
        return;
    }
    let mut rng = Lcg(31);
    let shapes = [
        (1, 1, 1),
        (5, 17, 3),
        (7, 33, 255),
        (13, 15, 257),
        (133, 40, 300),
        (270, 31, 9),
        (6, 16, 520),
        (12, 32, 256),
        (25, 64, 513),
        (971, 70, 20),
        (23, 4100, 3),
        (3, 5, 0),
    ];
    for (m, n, k) in shapes {
        for a_cm in [false, true] {
            for b_cm in [false, true] {
                // (accumulate, with the bias + GELU epilogue, with GELU's backward)
                let modes = [
                    (false, false, false),
                    (true, false, false),
                    (false, true, false),
                    (true, false, true),
                ];
                for (accumulate, fused, backward) in modes {
                    let (a, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
                    // dst rows are n + 3 wide: the extra columns must stay untouched.
                    let width = n + 3;
                    let start = rng.vec(m * width, 1.0);
                    let mut dst = start.clone();
                    let (lhs, rhs) = (view(&a, m, k, a_cm), view(&b, k, n, b_cm));
                    let out = View {
                        ptr: dst.as_mut_ptr(),
                        rs: width as isize,
                        cs: 1,
                    };
                    let bias = rng.vec(n, 1.0);
                    let mut activated = vec![0.0f32; m * width];
                    let pre = rng.vec(m * width, 3.0);
                    let dpre_start = rng.vec(m * width, 1.0);
                    let mut dpre = dpre_start.clone();
                    let epilogue = if fused {
                        Epilogue {
                            bias: bias.as_ptr(),
                            gelu: activated.as_mut_ptr(),
                            ..Epilogue::NONE
                        }
                    } else if backward {
                        Epilogue {
                            gelu_backward: (pre.as_ptr(), dpre.as_mut_ptr()),
                            ..Epilogue::NONE
                        }
                    } else {
                        Epilogue::NONE
                    };
                    let bf16 = unit.map(|unit| Bf16 {
                        unit,
                        panels: std::ptr::null(),
                    });
                    // SAFETY: the buffers hold these shapes.
                    unsafe { gemm(isa, m, k, 0..n, out, (lhs, rhs, bf16), accumulate, epilogue) };
                    if let Some(bf16) = bf16.filter(|b| reads_panels(b.unit) && !fused) {
                        // rhs packed ahead into its whole panels: the same bits.
                        let mut panels = vec![0u16; panels_len(k, n)];
                        let mut again = start.clone();
                        let out = View {
                            ptr: again.as_mut_ptr(),
                            ..out
                        };
                        let mut dpre_again = dpre_start.clone();
                        let epilogue = match backward {
                            true => Epilogue {
                                gelu_backward: (pre.as_ptr(), dpre_again.as_mut_ptr()),
                                ..Epilogue::NONE
                            },
                            false => Epilogue::NONE,
                        };
                        // SAFETY: as above; the panels hold panels_len(k, n) elements.
                        unsafe {
                            pack_panels(panels.as_mut_ptr(), rhs, k, n, 0..n);
                            let bf16 = Some(Bf16 {
                                panels: panels.as_ptr(),
                                ..bf16
                            });
                            gemm(isa, m, k, 0..n, out, (lhs, rhs, bf16), accumulate, epilogue)
                        };
                        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        let name = format!("{:?} {m}×{n}×{k} b_cm={b_cm} from panels", bf16.unit);
                        assert!(bits(&again) == bits(&dst), "{name}: other bits");
                        assert!(bits(&dpre_again) == bits(&dpre), "{name}: GELU backward");
                    }
                    let at = |v: &View, i: usize, j: usize| unsafe {
                        precision.operand(*v.ptr.offset(i as isize * v.rs + j as isize * v.cs))
                            as f64
                    };
                    let mut expected = start.clone();
                    for i in 0..m {
                        for j in 0..n {
                            let sum: f64 = (0..k).map(|p| at(&lhs, i, p) * at(&rhs, p, j)).sum();
                            let base = if accumulate {
                                start[i * width + j] as f64
                            } else {
                                0.0
                            };
                            let bias = if fused { bias[j] as f64 } else { 0.0 };
                            expected[i * width + j] = (base + sum + bias) as f32;
                        }
                    }
                    if fused {
                        let name =
                            format!("{} {m}×{n}×{k} a_cm={a_cm} b_cm={b_cm}: GELU", isa.name());
                        let mut want = vec![0.0f32; m * width];
                        for i in 0..m {
                            for j in 0..n {
                                want[i * width + j] = gelu(expected[i * width + j] as f64) as f32;
                            }
                        }
                        assert_kernel_matches(&name, &activated, &want, k);
                    }
                    if backward {
                        let name = format!(
                            "{} {m}×{n}×{k} a_cm={a_cm} b_cm={b_cm}: GELU backward",
                            isa.name()
                        );
                        let mut want = dpre_start.clone();
                        for i in 0..m {
                            for j in 0..n {
                                let at = i * width + j;
                                let grad = gelu_grad(pre[at] as f64);
                                want[at] =
                                    (dpre_start[at] as f64 + expected[at] as f64 * grad) as f32;
                            }
                        }
                        assert_kernel_matches(&name, &dpre, &want, k);
                    }
                    let name = format!("{} {m}×{n}×{k}", isa.name());
                    let name = format!(
                        "{name} a_cm={a_cm} b_cm={b_cm} acc={accumulate} fused={fused} backward={backward}"
                    );
                    assert_kernel_matches(&name, &dst, &expected, k);
                    for i in 0..m {
                        assert_eq!(
                            dst[i * width + n..(i + 1) * width],
                            start[i * width + n..(i + 1) * width],
                            "{name}: wrote outside the tile"
                        );
                    }
                }
            }
        }
    }
}

//! Matmul: the JIT kernels (both GEMMs, bias, the fused GELU epilogue and the fused GELU
//! backward) against the
//! reference on ragged shapes, and the reference backward against finite differences.
//!
//! The shared tolerance (`assert_kernel_matches`) and the gradient check
//! (`assert_gradient`) are in `common/`.

mod common;
use common::*;

use cllm_kernels::bf16::Precision;
use cllm_kernels::ir::Step;
use cllm_kernels::reference::Scalars;

use cllm_kernels::gelu::*;
use cllm_kernels::matmul::*;

#[test]
fn matmul_kernels_match() {
    with_both_gemms(matmul_kernels_match_once);
}

fn matmul_kernels_match_once() {
    for (n, c, oc) in [(5, 7, 3), (16, 32, 48), (13, 37, 29), (64, 128, 384)] {
        let mut rng = Lcg((n * c * oc) as u64);
        let (mut inp, mut weight, mut bias) =
            (rng.vec(n * c, 1.0), rng.vec(oc * c, 1.0), rng.vec(oc, 1.0));
        for gelu in [false, true] {
            let compiled = compile(5, |e, p| {
                emit_matmul_forward(
                    e,
                    Precision::Fp32,
                    p[0],
                    p[1],
                    p[2],
                    (Some(p[3]), gelu.then_some(p[4]), None),
                    n,
                    c,
                    oc,
                )
            });
            let (mut out, mut g) = (vec![0.0; n * oc], vec![0.0; n * oc]);
            call(
                &compiled,
                &mut [
                    ptr(&mut out),
                    ptr(&mut inp),
                    ptr(&mut weight),
                    ptr(&mut bias),
                    ptr(&mut g),
                ],
                &[],
            );
            let mut reference = vec![0.0; n * oc];
            matmul_forward(&mut reference, &inp, &weight, Some(&bias), c, oc);
            assert_kernel_matches("matmul_forward", &out, &reference, c);
            if gelu {
                let mut reference_g = vec![0.0; n * oc];
                gelu_forward(&mut reference_g, &reference);
                assert_kernel_matches("matmul_bias_gelu epilogue", &g, &reference_g, c);
            }
        }
        let mut dout = rng.vec(n * oc, 1.0);
        let (dinp0, dweight0, dbias0) =
            (rng.vec(n * c, 1.0), rng.vec(oc * c, 1.0), rng.vec(oc, 1.0));
        // With `gelu`, inp is a GELU's output and the step also accumulates
        // dpre += dinp ⊙ gelu'(pre) (the fused GELU backward).
        let (mut pre, dpre0) = (rng.vec(n * c, 3.0), rng.vec(n * c, 1.0));
        for gelu in [false, true] {
            let compiled = compile(8, |e, p| {
                let fused = gelu.then(|| (p[6], p[7]));
                let (d, x) = ([p[0], p[1]], [p[3], p[4], p[5]]);
                let db = Some(p[2]);
                emit_matmul_backward(
                    e,
                    Precision::Fp32,
                    d,
                    db,
                    x,
                    fused,
                    None,
                    [n, c, oc],
                    [false; 2],
                )
            });
            let (mut dinp, mut dweight, mut dbias) =
                (dinp0.clone(), dweight0.clone(), dbias0.clone());
            let mut dpre = dpre0.clone();
            call(
                &compiled,
                &mut [
                    ptr(&mut dinp),
                    ptr(&mut dweight),
                    ptr(&mut dbias),
                    ptr(&mut dout),
                    ptr(&mut inp),
                    ptr(&mut weight),
                    ptr(&mut dpre),
                    ptr(&mut pre),
                ],
                &[],
            );
            let (mut rdinp, mut rdweight, mut rdbias) =
                (dinp0.clone(), dweight0.clone(), dbias0.clone());
            matmul_backward(
                &mut rdinp,
                &mut rdweight,
                Some(&mut rdbias),
                &dout,
                &inp,
                &weight,
                c,
                oc,
            );
            assert_kernel_matches("matmul_backward.dinp", &dinp, &rdinp, oc);
            assert_kernel_matches("matmul_backward.dweight", &dweight, &rdweight, n);
            assert_kernel_matches("matmul_backward.dbias", &dbias, &rdbias, n);
            if gelu {
                let mut rdpre = dpre0.clone();
                gelu_backward(&mut rdpre, &rdinp, &pre);
                assert_kernel_matches("matmul_backward + gelu_backward", &dpre, &rdpre, oc);
            } else {
                assert_eq!(dpre, dpre0, "no GELU: dpre untouched");
            }
        }
    }
}

/// The bias gradient's native pass (`cllm_bias_backward`, with native kernels) gives
/// the bits of the JIT's own loop (each column's rows added in order, one rounding
/// each), on widths around its strip of 128 columns; values spread over seven decades
/// make any other order of the sums show (tested: summing the rows backwards fails).
#[test]
fn native_bias_gradient_has_the_jit_loops_bits() {
    let c = 3;
    for (n, oc) in [(1, 1), (7, 127), (33, 128), (19, 300), (64, 1536)] {
        let mut rng = Lcg((n * oc) as u64 + 11);
        let dout: Vec<f32> = (0..n * oc)
            .map(|i| rng.next() * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        let (inp, weight, dbias0) = (rng.vec(n * c, 1.0), rng.vec(oc * c, 1.0), rng.vec(oc, 1.0));
        let results = std::cell::RefCell::new(Vec::new());
        with_both_gemms(|| {
            let compiled = compile(6, |e, p| {
                let (d, x) = ([p[0], p[1]], [p[3], p[4], p[5]]);
                let dims = [n, c, oc];
                emit_matmul_backward(
                    e,
                    Precision::Fp32,
                    d,
                    Some(p[2]),
                    x,
                    None,
                    None,
                    dims,
                    [false; 2],
                )
            });
            let (mut dinp, mut dweight, mut dbias) =
                (vec![0.0; n * c], vec![0.0; oc * c], dbias0.clone());
            let (mut dout, mut inp, mut weight) = (dout.clone(), inp.clone(), weight.clone());
            let buffers = [
                &mut dinp,
                &mut dweight,
                &mut dbias,
                &mut dout,
                &mut inp,
                &mut weight,
            ];
            call(&compiled, &mut buffers.map(|b| ptr(b)), &[]);
            results
                .borrow_mut()
                .push(dbias.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        });
        let results = results.into_inner();
        assert!(
            results[0] == results[1],
            "dbias of {n} × {oc}: the native pass changed bits"
        );
    }
}

#[test]
fn matmul_gradients() {
    for (n, c, oc) in [(3, 5, 7), (4, 8, 4), (1, 3, 2)] {
        let mut rng = Lcg(n as u64 * 31 + c as u64);
        let (inp, weight, bias, w) = (
            rng.vec_f64(n * c),
            rng.vec_f64(oc * c),
            rng.vec_f64(oc),
            rng.vec_f64(n * oc),
        );
        let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
            let mut out = vec![0.0; n * oc];
            matmul_forward(&mut out, inp, weight, Some(bias), c, oc);
            weighted(&out, &w)
        };
        let (mut dinp, mut dweight, mut dbias) =
            (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
        matmul_backward(
            &mut dinp,
            &mut dweight,
            Some(&mut dbias),
            &w,
            &inp,
            &weight,
            c,
            oc,
        );
        assert_gradient("matmul.inp", &inp, &dinp, |x| forward(x, &weight, &bias));
        assert_gradient("matmul.weight", &weight, &dweight, |x| {
            forward(&inp, x, &bias)
        });
        assert_gradient("matmul.bias", &bias, &dbias, |x| forward(&inp, &weight, x));
    }
}

/// This family's steps through both back ends of the kernel IR (`emit_step` and
/// `run_step`, by slot name) on random ragged shapes: `common::assert_step_matches`,
/// in fp32 and in bf16. In bf16 both back ends round every operand element to bf16
/// the same way (nearest, ties to even) and the products of two bf16 values are exact
/// in fp32, so the two differ only in the order of their fp32 (JIT) and f64
/// (reference) sums: the fp32 tolerance holds. A GEMM that truncated instead of
/// rounding would be off by up to 2⁻⁸ relative per element (tested: it fails).
#[test]
fn steps_match_through_both_back_ends() {
    for precision in [Precision::Fp32, Precision::Bf16] {
        eprintln!("-- {}", precision.name());
        steps_match_once(precision);
    }
}

fn steps_match_once(precision: Precision) {
    on_random_shapes(1, |rng, round| {
        let none = Scalars::default();
        let name = |kind: &str| format!("{kind}#{round}");
        let rows = pick(rng, 1, 37);
        let (c, oc) = (pick(rng, 1, 70), pick(rng, 1, 50));
        for bias in [false, true] {
            for gelu in [false, true] {
                let step = Step::Matmul {
                    rows,
                    c,
                    oc,
                    precision,
                    out: rows * oc,
                    inp: rows * c,
                    weight: oc * c,
                    bias: bias.then_some(oc),
                    gelu_out: gelu.then_some(rows * oc),
                    panels: None,
                };
                assert_step_matches(&name("matmul"), step, 1, &none, c, rng);
                // The gradients added to (their buffers hold random values), and
                // stored over them: the input's when the step writes it first, the
                // weight's in a shard's first pass.
                let cases = [
                    (false, false, false),
                    (true, true, true),
                    (false, true, false),
                    (true, false, true),
                ];
                for (stores_dinp, stores_dweight, first_pass) in cases {
                    let step = Step::MatmulBackward {
                        rows,
                        c,
                        oc,
                        precision,
                        stores_dweight,
                        stores_dinp,
                        dinp: rows * c,
                        dweight: oc * c,
                        dbias: bias.then_some(oc),
                        dout: rows * oc,
                        inp: rows * c,
                        weight: oc * c,
                        dpre: gelu.then_some(rows * c),
                        pre: gelu.then_some(rows * c),
                        panels: None,
                    };
                    let scalars = Scalars {
                        first_pass,
                        ..Scalars::default()
                    };
                    let reduction = rows.max(oc);
                    let name = name("matmul_backward");
                    assert_step_matches(&name, step, 1, &scalars, reduction, rng);
                }
            }
        }
    });
}

/// The weights' bf16 panels (`WeightPanels`, made once per step) read by the products
/// in place of the weight give the same bits as the products rounding and packing the
/// weight themselves, forward and input gradient, on ragged shapes: k past one packed
/// block (512) and columns past one thread's first panel included. On a CPU whose bf16
/// unit reads no panels the panels are not written and not read (the same bits
/// trivially); CI reruns this file with `CLLM_ISA=avx512bf16` and on AMX.
#[test]
fn bf16_products_read_the_weight_panels_bit_for_bit() {
    use cllm_kernels::gemm::panels_len;
    use cllm_kernels::program::{KernelDesc, compile};
    let shapes = [
        (1, 1, 1),
        (7, 33, 65),
        (37, 70, 50),
        (5, 600, 40),
        (9, 40, 530),
    ];
    for (round, (rows, c, oc)) in shapes.into_iter().enumerate() {
        let mut rng = Lcg(round as u64 + 11);
        // Slots: 0 out, 1 inp, 2 weight, 3 bias, 4 forward panels, 5 backward panels,
        // 6 dinp, 7 dweight, 8 dout.
        let matmul = |panels: bool| {
            let forward = Step::Matmul {
                rows,
                c,
                oc,
                precision: Precision::Bf16,
                out: 0,
                inp: 1,
                weight: 2,
                bias: Some(3),
                gelu_out: None,
                panels: panels.then_some(4),
            };
            let backward = Step::MatmulBackward {
                rows,
                c,
                oc,
                precision: Precision::Bf16,
                stores_dweight: false,
                stores_dinp: false,
                dinp: 6,
                dweight: 7,
                dbias: None,
                dout: 8,
                inp: 1,
                weight: 2,
                dpre: None,
                pre: None,
                panels: panels.then_some(5),
            };
            let pack = Step::WeightPanels {
                c,
                oc,
                forward: 4,
                backward: 5,
                weight: 2,
            };
            let steps = match panels {
                true => vec![pack, forward, backward],
                false => vec![forward, backward],
            };
            let desc = KernelDesc {
                name: format!("matmul_panels_{panels}"),
                steps,
            };
            let options = cllm_kernels::jit::JitOptions::default();
            compile(&[desc], options).expect("compiles")
        };
        let inputs = [
            rng.vec(rows * c, 1.0),
            rng.vec(oc * c, 1.0),
            rng.vec(oc, 1.0),
        ];
        let dout = rng.vec(rows * oc, 1.0);
        let run = |panels: bool| {
            let compiled = matmul(panels);
            let [mut inp, mut weight, mut bias] = inputs.clone();
            let mut forward = vec![0.0f32; panels_len(c, oc) / 2];
            let mut backward = vec![0.0f32; panels_len(oc, c) / 2];
            let (mut out, mut dinp) = (vec![0.0; rows * oc], vec![0.0; rows * c]);
            let (mut dweight, mut d) = (vec![0.0; oc * c], dout.clone());
            let mut table = [
                ptr(&mut out),
                ptr(&mut inp),
                ptr(&mut weight),
                ptr(&mut bias),
                ptr(&mut forward),
                ptr(&mut backward),
                ptr(&mut dinp),
                ptr(&mut dweight),
                ptr(&mut d),
            ];
            call(&compiled, &mut table, &[0.0]);
            (out, dinp, dweight)
        };
        let (with, without) = (run(true), run(false));
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let shape = format!("rows {rows}, c {c}, oc {oc}");
        assert_eq!(bits(&with.0), bits(&without.0), "forward, {shape}");
        assert_eq!(bits(&with.1), bits(&without.1), "input gradient, {shape}");
        assert_eq!(bits(&with.2), bits(&without.2), "weight gradient, {shape}");
    }
}

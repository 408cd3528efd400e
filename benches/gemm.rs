//! The native GEMM on bench-s's shapes as one shard multiplies them (B = 1, T = 256
//! rows, C = 384; the forward pass reads the weight transposed, the weight gradient
//! reads dout transposed), every micro-kernel this CPU runs, one thread. Prints a
//! table (fp32 micro-kernels, then bf16 products on every bf16 unit — "of its
//! width's peak" is then the unit's own matrix peak): GFLOP/s of the best and the median of 30 rounds (each round runs every
//! shape on every micro-kernel once and measures the FMA peaks, so a noisy phase of a
//! shared machine hits all of them alike; the best run is the least disturbed) and
//! the fraction of the best peak, best run, at the micro-kernel's own width and at
//! the widest width the CPU has.
//!
//! On a matrix unit that reads panels (AVX512-BF16, AMX), the shapes whose right
//! operand is a weight run twice: packing it in the call, as the fp32 kernels do, and
//! reading its panels packed ahead ("weight packed once"), as a training step does
//! (each weight is rounded and packed once per step, after AdamW, and every shard's
//! forward and backward reads those panels).
//!
//! On such a unit each shape runs once more with both operands packed ahead and no
//! epilogue ("micro-tiles alone"): the micro-tile's own rate over a product, which
//! the rows above lose to packing, epilogues and stores.
//!
//!     cargo bench --bench gemm
//!     ONLY=GELU cargo bench --bench gemm      # the shapes whose name contains GELU

use std::ptr::null;
use std::time::Instant;

use cllm::peak;
use cllm_kernels::cpu::{self, Bf16Unit, Isa};
use cllm_kernels::gemm::packed::panels::{self, Bf16Panels};
use cllm_kernels::gemm::packed::{Bf16, Epilogue, View, gemm, pack_panels, reads_panels};

/// (name, m, k, n, lhs transposed, rhs transposed); a name ending in "+ bias + GELU"
/// runs the fused epilogue.
const SHAPES: [(&str, usize, usize, usize, bool, bool); 8] = [
    ("qkv x·Wᵀ", 256, 384, 1152, false, true),
    ("fc x·Wᵀ", 256, 384, 1536, false, true),
    ("fc x·Wᵀ + bias + GELU", 256, 384, 1536, false, true),
    ("proj x·Wᵀ", 256, 1536, 384, false, true),
    ("fc dx = dy·W", 256, 1536, 384, false, false),
    ("fc dW = dyᵀ·x", 1536, 256, 384, true, false),
    ("proj dW = dyᵀ·x", 384, 256, 1536, true, false),
    ("MKL's 2048×384×1536", 2048, 384, 1536, false, true),
];
const ROUNDS: usize = 30;

fn view(data: &[f32], rows: usize, cols: usize, transposed: bool) -> View {
    let (rs, cs) = if transposed {
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

/// Whether a shape's right operand is a weight (a training step packs its panels once
/// per step); the weight gradients' is an activation, packed by every product.
fn weight_rhs(name: &str) -> bool {
    !name.contains("dW")
}

/// What a bf16 product on a panel-reading unit packs in the call.
#[derive(Clone, Copy, PartialEq)]
enum Ahead {
    /// Both operands (as the fp32 kernels do).
    Nothing,
    /// The left operand only: the weight's panels are packed ahead, as a step does.
    Weight,
    /// Neither, and no epilogue: the micro-tiles alone.
    Both,
}

struct Case {
    isa: Isa,
    bf16: Option<Bf16Unit>,
    ahead: Ahead,
    /// The right operand's panels, packed ahead (empty: the call packs it).
    panels: Vec<u16>,
    /// The left operand's panels, packed ahead ([`Ahead::Both`]; else empty).
    a_panels: Vec<u16>,
    shape: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    bias: Vec<f32>,
    gelu: Vec<f32>,
    times: Vec<f64>,
}

impl Case {
    fn run(&mut self) {
        let (name, m, k, n, lt, rt) = SHAPES[self.shape];
        let epilogue = if name.ends_with("GELU") {
            Epilogue {
                bias: self.bias.as_ptr(),
                gelu: self.gelu.as_mut_ptr(),
                ..Epilogue::NONE
            }
        } else {
            Epilogue::NONE
        };
        let (lhs, rhs) = (view(&self.a, m, k, lt), view(&self.b, k, n, rt));
        let dst = View {
            ptr: self.c.as_mut_ptr(),
            rs: n as isize,
            cs: 1,
        };
        let started = Instant::now();
        if self.ahead == Ahead::Both {
            let steps = k.div_ceil(panels::BF16_TILE);
            let [a, b] = [&self.a_panels, &self.panels].map(|p| Bf16Panels {
                ptr: p.as_ptr(),
                steps,
                from: 0,
            });
            let unit = self.bf16.expect("a bf16 unit");
            // SAFETY: the unit reads panels (the CPU has it); the panels hold the m
            // rows of A and the n columns of B, k deep; dst is m × n.
            unsafe { panels::multiply_bf16(unit, [m, n, k], dst, a, b, false) };
            self.times.push(started.elapsed().as_secs_f64());
            return;
        }
        // SAFETY: the buffers hold these shapes; the ISA is supported.
        unsafe {
            gemm(
                self.isa,
                m,
                k,
                0..n,
                dst,
                (
                    lhs,
                    rhs,
                    self.bf16.map(|unit| Bf16 {
                        unit,
                        panels: if self.panels.is_empty() {
                            null()
                        } else {
                            self.panels.as_ptr()
                        },
                    }),
                ),
                false,
                epilogue,
            )
        };
        self.times.push(started.elapsed().as_secs_f64());
    }
}

fn main() {
    let widest = peak::widest();
    let isas: Vec<Isa> = cpu::supported()
        .into_iter()
        .filter(|i| *i >= Isa::Avx2)
        .collect();
    // Every fp32 micro-kernel, then every bf16 unit (on the widest fp32 level).
    let mut kernels: Vec<(Isa, Option<Bf16Unit>, Ahead)> = isas
        .iter()
        .map(|&isa| (isa, None, Ahead::Nothing))
        .collect();
    for unit in cpu::bf16_supported() {
        kernels.push((widest, Some(unit), Ahead::Nothing));
        if reads_panels(unit) {
            kernels.push((widest, Some(unit), Ahead::Weight));
        }
    }
    let alone: Vec<_> = (cpu::bf16_supported().into_iter())
        .filter(|u| reads_panels(*u))
        .map(|unit| (widest, Some(unit), Ahead::Both))
        .collect();
    kernels.extend(alone);
    let kernels = &kernels;
    let mut cases: Vec<Case> = (0..SHAPES.len())
        .filter(|s| std::env::var("ONLY").map_or(true, |o| SHAPES[*s].0.contains(o.as_str())))
        .flat_map(|shape| {
            kernels
                .iter()
                .filter(move |k| match k.2 {
                    Ahead::Nothing => true,
                    Ahead::Weight => weight_rhs(SHAPES[shape].0),
                    Ahead::Both => !SHAPES[shape].0.ends_with("GELU"),
                })
                .map(move |&(isa, bf16, ahead)| {
                    let (_, m, k, n, lt, rt) = SHAPES[shape];
                    let b: Vec<f32> = (0..k * n)
                        .map(|i| ((i % 83) as f32 - 41.0) * 0.01)
                        .collect();
                    let a: Vec<f32> = (0..m * k)
                        .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
                        .collect();
                    let (mut panels, mut a_panels) = (Vec::new(), Vec::new());
                    if ahead != Ahead::Nothing {
                        panels = vec![0u16; cllm_kernels::gemm::panels_len(k, n)];
                        // SAFETY: this unit reads panels, so the CPU has AVX512-BF16;
                        // `panels` holds the panels of the k × n matrix `b`.
                        unsafe { pack_panels(panels.as_mut_ptr(), view(&b, k, n, rt), k, n, 0..n) };
                    }
                    if ahead == Ahead::Both {
                        a_panels = vec![0u16; panels::bf16_len(m, k)];
                        // SAFETY: as above; `a_panels` holds the panels of the m × k `a`.
                        unsafe { panels::pack_a_bf16(&mut a_panels, view(&a, m, k, lt), m, k) };
                    }
                    Case {
                        isa,
                        bf16,
                        ahead,
                        panels,
                        a_panels,
                        shape,
                        a,
                        b,
                        c: vec![0.0; m * n],
                        bias: vec![0.01; n],
                        gelu: vec![0.0; m * n],
                        times: Vec::new(),
                    }
                })
        })
        .collect();
    // The peaks are measured in every round too, and the best kept: a ratio of two
    // best runs, both from the same phases of a noisy machine.
    let mut peaks = vec![0.0f64; isas.len()];
    for _ in 0..3 + ROUNDS {
        cases.iter_mut().for_each(Case::run);
        for (p, isa) in peaks.iter_mut().zip(&isas) {
            *p = p.max(peak::fma_peak_gflops_at(*isa, 1));
        }
    }
    for (isa, p) in isas.iter().zip(&peaks) {
        println!(
            "{}-bit FMA peak, 1 thread: {p:.1} GFLOP/s",
            isa.vector_bits()
        );
    }
    let bf16_peaks: Vec<(Bf16Unit, f64)> = cpu::bf16_supported()
        .into_iter()
        .filter(|u| *u != Bf16Unit::Emulated)
        .map(|u| (u, peak::bf16_peak_gflops(u, 1)))
        .collect();
    for (unit, p) in &bf16_peaks {
        println!("{} bf16 peak, 1 thread: {p:.1} GFLOP/s", unit.name());
    }
    // The widest width's peak from the same measurement.
    let widest_peak = peaks[isas.iter().position(|i| *i == widest).unwrap_or(0)];
    println!();
    println!(
        "| shape (m × k × n) | micro-kernel | GFLOP/s best (median) | of its width's peak | of the {}-bit peak |",
        widest.vector_bits()
    );
    println!("|---|---|---|---|---|");
    for case in &mut cases {
        let (name, m, k, n, _, _) = SHAPES[case.shape];
        let mut times = case.times.split_off(3);
        times.sort_by(f64::total_cmp);
        let flop = 2.0 * (m * k * n) as f64;
        let (best, median) = (flop / times[0] / 1e9, flop / times[times.len() / 2] / 1e9);
        let fp32_own = peaks[isas.iter().position(|i| *i == case.isa).expect("listed")];
        let own = match case.bf16 {
            Some(unit) => bf16_peaks
                .iter()
                .find(|p| p.0 == unit)
                .map_or(fp32_own, |p| p.1),
            None => fp32_own,
        };
        let kernel = match (case.bf16, case.ahead) {
            (Some(unit), Ahead::Weight) => format!("bf16 {}, weight packed once", unit.name()),
            (Some(unit), Ahead::Both) => format!(
                "bf16 {}, micro-tiles alone (both packed once, no epilogue)",
                unit.name()
            ),
            (Some(unit), Ahead::Nothing) => format!("bf16 {}", unit.name()),
            (None, _) => case.isa.name().to_string(),
        };
        println!(
            "| {name} {m}×{k}×{n} | {kernel} | {best:.1} ({median:.1}) | {:.0}% | {:.0}% |",
            100.0 * best / own,
            100.0 * best / widest_peak
        );
    }
}

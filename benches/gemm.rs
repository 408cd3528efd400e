//! The native GEMM on bench-s's shapes as one shard multiplies them (B = 1, T = 256
//! rows, C = 384; the forward pass reads the weight transposed, the weight gradient
//! reads dout transposed), every micro-kernel this CPU runs, one thread. Prints a
//! table: GFLOP/s of the best and the median of 30 rounds (each round runs every
//! shape on every micro-kernel once and measures the FMA peaks, so a noisy phase of a
//! shared machine hits all of them alike; the best run is the least disturbed) and
//! the fraction of the best peak, best run, at the micro-kernel's own width and at
//! the widest width the CPU has.
//!
//!     cargo bench --bench gemm
//!     ONLY=GELU cargo bench --bench gemm      # the shapes whose name contains GELU

use std::time::Instant;

use cllm::peak;
use cllm_kernels::bf16::Precision;
use cllm_kernels::cpu::{self, Isa};
use cllm_kernels::gemm::packed::{Epilogue, View, gemm};

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

struct Case {
    isa: Isa,
    precision: Precision,
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
        // SAFETY: the buffers hold these shapes; the ISA is supported.
        unsafe {
            gemm(
                self.isa,
                m,
                k,
                0..n,
                dst,
                (lhs, rhs, self.precision),
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
    let mut cases: Vec<Case> = (0..SHAPES.len())
        .filter(|s| std::env::var("ONLY").map_or(true, |o| SHAPES[*s].0.contains(o.as_str())))
        .flat_map(|shape| {
            let (_, m, k, n, _, _) = SHAPES[shape];
            isas.iter().map(move |&isa| Case {
                isa,
                precision: Precision::Fp32,
                shape,
                a: (0..m * k)
                    .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
                    .collect(),
                b: (0..k * n)
                    .map(|i| ((i % 83) as f32 - 41.0) * 0.01)
                    .collect(),
                c: vec![0.0; m * n],
                bias: vec![0.01; n],
                gelu: vec![0.0; m * n],
                times: Vec::new(),
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
        let own = peaks[isas.iter().position(|i| *i == case.isa).expect("listed")];
        println!(
            "| {name} {m}×{k}×{n} | {} | {best:.1} ({median:.1}) | {:.0}% | {:.0}% |",
            case.isa.name(),
            100.0 * best / own,
            100.0 * best / widest_peak
        );
    }
}

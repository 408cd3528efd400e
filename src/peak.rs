//! The machine's own ceilings, measured rather than assumed: float32 FMA throughput
//! at each vector width the CPU has (independent accumulator chains enough to cover
//! the FMA latency of two FMA units on current x86 cores) and streaming memory
//! bandwidth (a triad). Measured per run so a figure always sits beside the peak of
//! the machine that produced it. Fractions of peak are taken against the widest
//! width ([`widest`]): that is what the CPU can do, whatever our kernels use.

use std::time::Instant;

use cllm_kernels::cpu::{self, Bf16Unit, Isa};

/// The widest vector level this CPU supports (512-bit where `avx512f` is present,
/// else 256-bit with AVX2 + FMA), regardless of `CLLM_ISA`.
pub fn widest() -> Isa {
    *cpu::supported()
        .last()
        .expect("portable is always supported")
}

/// GFLOP/s of `threads` threads each running an FMA loop at the widest width.
pub fn fma_peak_gflops(threads: usize) -> f64 {
    fma_peak_gflops_at(widest(), threads)
}

/// GFLOP/s of `threads` threads each running an FMA loop at `isa`'s width, best of 5
/// tries (0 for the portable level, which has no FMA loop of its own).
pub fn fma_peak_gflops_at(isa: Isa, threads: usize) -> f64 {
    const ITERATIONS: u64 = 10_000_000;
    let run = || {
        let started = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| s.spawn(|| fma_loop(isa, ITERATIONS)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("the FMA loop does not panic"))
                .sum()
        });
        std::hint::black_box(sink);
        let flops = threads.max(1) as f64
            * ITERATIONS as f64
            * chains(isa) as f64
            * isa.f32_lanes() as f64
            * 2.0;
        flops / started.elapsed().as_secs_f64() / 1e9
    };
    if isa == Isa::Portable {
        return 0.0;
    }
    (0..5).map(|_| run()).fold(0.0, f64::max)
}

/// The ceiling a run's matrix products are measured against: the widest FMA peak in
/// fp32; in bf16 the peak of the unit its products run on (the FMA peak for the
/// emulated unit). Returns (what it is, GFLOP/s on `threads` threads).
pub fn matrix_peak(precision: cllm_kernels::Precision, threads: usize) -> (&'static str, f64) {
    let fma = || {
        let name = match widest() {
            Isa::Avx512 => "512-bit FMA peak",
            Isa::Avx2 => "256-bit FMA peak",
            Isa::Portable => "FMA peak (none measured)",
        };
        (name, fma_peak_gflops(threads))
    };
    match (precision, cpu::bf16_unit()) {
        (cllm_kernels::Precision::Fp32, _) | (_, Bf16Unit::Emulated) => fma(),
        (_, Bf16Unit::Amx) => ("AMX bf16 peak", bf16_peak_gflops(Bf16Unit::Amx, threads)),
        (_, unit) => ("AVX512-BF16 peak", bf16_peak_gflops(unit, threads)),
    }
}

/// GFLOP/s of `threads` threads each running the bf16 matrix instructions of `unit`
/// back to back (AMX: four independent TDPBF16PS), best of 5; 0 for the emulated unit
/// (its peak is the fp32 FMA peak).
pub fn bf16_peak_gflops(unit: Bf16Unit, threads: usize) -> f64 {
    let one = move || -> f64 {
        match unit {
            #[cfg(target_arch = "x86_64")]
            Bf16Unit::Amx => cllm_kernels::gemm::packed::amx::peak_loop(200_000),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the unit is only asked for where the CPU has it.
            Bf16Unit::Avx512Bf16 => unsafe { dpbf16_loop(2_000_000) },
            _ => 0.0,
        }
    };
    let run = || {
        let started = Instant::now();
        let flops: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(one)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .sum()
        });
        flops / started.elapsed().as_secs_f64() / 1e9
    };
    (0..5).map(|_| run()).fold(0.0, f64::max)
}

/// `iterations` × 16 independent VDPBF16PS (16 lanes × two bf16 multiply-adds);
/// returns the FLOPs done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dpbf16_loop(iterations: u64) -> f64 {
    use std::arch::x86_64::*;
    // SAFETY: same-size reinterpretations of vector registers.
    let (a, b): (__m512bh, __m512bh) = unsafe {
        (
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3f80_3f80)),
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3380_3380)),
        )
    };
    let mut acc = [_mm512_set1_ps(1.0); 16];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm512_dpbf16_ps(*x, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for x in acc {
        sum = _mm512_add_ps(sum, x);
    }
    std::hint::black_box(sum);
    iterations as f64 * 16.0 * 16.0 * 4.0
}

/// Independent FMA chains per loop: at least two FMA units × 4 cycles of latency,
/// and as many as the register file holds beside the two operands (16 ymm registers
/// for AVX2, 32 zmm for AVX-512).
const fn chains(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        _ => 10,
    }
}

/// Streaming bandwidth in GB/s (`a = b + s·c` over 3 × 64 MiB; bytes read and written),
/// best of 5.
pub fn triad_gbps() -> f64 {
    const N: usize = 16 << 20;
    let (mut a, b, c) = (vec![0.0f32; N], vec![1.0f32; N], vec![2.0f32; N]);
    let mut best: f64 = 0.0;
    for _ in 0..5 {
        let started = Instant::now();
        for ((x, y), z) in a.iter_mut().zip(&b).zip(&c) {
            *x = y + 3.0 * z;
        }
        std::hint::black_box(&a);
        best = best.max(3.0 * 4.0 * N as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// How fast this pool's threads read `slices` (GB/s), as decoding's products read a
/// weight (`matvec::sweep`: blocks over the threads, full vector width), best of five
/// sweeps. Decoding one position reads every weight once, from wherever the weights
/// sit (a cache that holds them, or memory), so this is its bound, measured the way it
/// reads.
pub fn sweep_gbps(slices: &[&[f32]]) -> f64 {
    let bytes: usize = slices.iter().map(|s| 4 * s.len()).sum();
    let mut best: f64 = 0.0;
    for _ in 0..5 {
        let started = Instant::now();
        std::hint::black_box(cllm_kernels::gemm::matvec::sweep(std::hint::black_box(
            slices,
        )));
        best = best.max(bytes as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}

#[cfg(target_arch = "x86_64")]
fn fma_loop(isa: Isa, iterations: u64) -> f32 {
    // SAFETY: `isa` is one the CPU supports (the callers take it from `cpu`).
    match isa {
        Isa::Avx512 if cpu::supports(Isa::Avx512) => unsafe { fma_loop_avx512(iterations) },
        Isa::Avx2 if cpu::supports(Isa::Avx2) => unsafe { fma_loop_avx2(iterations) },
        _ => 0.0,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_loop(_isa: Isa, _iterations: u64) -> f32 {
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); chains(Isa::Avx2)];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for x in acc {
        sum = _mm256_add_ps(sum, x);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); chains(Isa::Avx512)];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for x in acc {
        sum = _mm512_add_ps(sum, x);
    }
    _mm512_reduce_add_ps(sum)
}

/// This machine's physical memory in bytes (`MemTotal` of /proc/meminfo), where known.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

//! The machine's own ceilings, measured rather than assumed: float32 FMA throughput
//! with 256-bit vectors (ten independent accumulator chains, enough to cover the FMA
//! latency on current x86 cores) and streaming memory bandwidth (a triad). Measured
//! per run so a figure always sits beside the peak of the machine that produced it.

use std::time::Instant;

/// GFLOP/s of `threads` threads each running a 256-bit FMA loop, best of 5 tries.
pub fn fma_peak_gflops(threads: usize) -> f64 {
    const ITERATIONS: u64 = 20_000_000;
    let run = || {
        let started = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| s.spawn(|| fma_loop(ITERATIONS)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("the FMA loop does not panic"))
                .sum()
        });
        std::hint::black_box(sink);
        let flops = threads.max(1) as f64 * ITERATIONS as f64 * 10.0 * 8.0 * 2.0;
        flops / started.elapsed().as_secs_f64() / 1e9
    };
    (0..5).map(|_| run()).fold(0.0, f64::max)
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

#[cfg(target_arch = "x86_64")]
fn fma_loop(iterations: u64) -> f32 {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        unsafe { fma_loop_avx2(iterations) }
    } else {
        0.0
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_loop(_iterations: u64) -> f32 {
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); 10];
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

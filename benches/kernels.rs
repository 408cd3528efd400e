//! Kernel benchmarks on bench-s shapes (one shard: B = 1, T = 256, C = 384, NH = 6,
//! V = 256; AdamW over bench-s's 10.8M parameters), JIT-compiled exactly as a plan
//! compiles them. Compute-bound kernels report FLOP/s (criterion's "elem/s" = FLOP/s),
//! memory-bound ones bytes/s. The machine's own peaks are measured first and printed,
//! so every figure sits beside the ceiling it is measured against.
//!
//!     cargo bench --bench kernels
//!     cargo bench --bench kernels -- attention     # one group

use cllm::peak;
use cllm_kernels::attention::AttentionShape;
use cllm_kernels::bf16::Precision;
use cllm_kernels::ir::Step;
use cllm_kernels::jit::{Compiled, JitOptions};
use cllm_kernels::program::{KernelDesc, compile};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const T: usize = 256;
const C: usize = 384;
const HEADS: usize = 6;
const V: usize = 256;
const PARAMS: usize = 10_844_160;

fn build(step: &Step, native: bool) -> Compiled {
    let desc = KernelDesc {
        name: "bench".into(),
        steps: vec![step.clone().numbered()],
    };
    compile(
        &[desc],
        JitOptions {
            verify: false,
            optimize: true,
            native,
        },
    )
    .expect("compiles")
}

/// Buffers for one kernel (each slot of `step` holds its buffer's length), with a
/// value pattern that keeps exp and sqrt finite; id slots hold valid ids below `ids`.
fn buffers(step: &Step, ids: usize) -> Vec<Vec<f32>> {
    step.slots()
        .into_iter()
        .map(|(slot, &n)| {
            (0..n)
                .map(|i| match slot.ids {
                    true => f32::from_bits((i % ids) as u32),
                    false => ((i % 97) as f32 - 48.0) * 0.01,
                })
                .collect()
        })
        .collect()
}

fn run(compiled: &Compiled, buffers: &mut [Vec<f32>], scalars: &[f64]) {
    let pointers: Vec<*mut u8> = buffers
        .iter_mut()
        .map(|b| b.as_mut_ptr() as *mut u8)
        .collect();
    // SAFETY: the buffers are sized for the shapes the kernel was compiled with.
    unsafe { (compiled.functions[0])(pointers.as_ptr(), scalars.as_ptr()) };
}

/// Benchmarks `step`, each of its slots bound to the length of its buffer.
fn bench_kernel(
    c: &mut Criterion,
    name: &str,
    step: Step,
    throughput: Throughput,
    scalars: &[f64],
    native: bool,
) {
    let compiled = build(&step, native);
    let mut bufs = buffers(&step, V);
    let mut group = c.benchmark_group(name);
    group.throughput(throughput);
    group.bench_function("jit", |b| b.iter(|| run(&compiled, &mut bufs, scalars)));
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let widest = peak::widest();
    let peak1 = peak::fma_peak_gflops_at(widest, 1);
    let triad = peak::triad_gbps();
    eprintln!(
        "measured peaks: {}-bit FMA {peak1:.1} GFLOP/s on 1 thread (the widest this CPU has; native GEMMs: {}); triad {triad:.1} GB/s",
        widest.vector_bits(),
        cllm_kernels::cpu::isa().name()
    );
    let n = T; // rows of one shard
    let flops = |x: usize| Throughput::Elements(x as u64);
    let bytes = |x: usize| Throughput::Bytes(4 * x as u64);
    for (label, native) in [("native", true), ("cranelift", false)] {
        bench_kernel(
            c,
            &format!("matmul_fwd_qkv_{label}"),
            Step::Matmul {
                rows: n,
                c: C,
                oc: 3 * C,
                precision: cllm_kernels::bf16::Precision::Fp32,
                out: n * 3 * C,
                inp: n * C,
                weight: 3 * C * C,
                bias: Some(3 * C),
                gelu_out: None,
                panels: None,
            },
            flops(2 * n * C * 3 * C),
            &[],
            native,
        );
    }
    bench_kernel(
        c,
        "matmul_bias_gelu_fwd_fc",
        Step::Matmul {
            rows: n,
            c: C,
            oc: 4 * C,
            precision: cllm_kernels::bf16::Precision::Fp32,
            out: n * 4 * C,
            inp: n * C,
            weight: 4 * C * C,
            bias: Some(4 * C),
            gelu_out: Some(n * 4 * C),
            panels: None,
        },
        flops(2 * n * C * 4 * C),
        &[],
        true,
    );
    bench_kernel(
        c,
        "matmul_bwd_fc",
        Step::MatmulBackward {
            rows: n,
            c: C,
            oc: 4 * C,
            precision: cllm_kernels::bf16::Precision::Fp32,
            stores_dweight: false,
            stores_dinp: false,
            dinp: n * C,
            dweight: 4 * C * C,
            dbias: Some(4 * C),
            dout: n * 4 * C,
            inp: n * C,
            weight: 4 * C * C,
            dpre: None,
            pre: None,
            panels: None,
        },
        flops(4 * n * C * 4 * C),
        &[],
        true,
    );
    // fc_proj's backward, alone and with GELU's backward in its dx epilogue (same FLOPs
    // counted for both, so the throughputs compare what the epilogue costs).
    for gelu in [false, true] {
        bench_kernel(
            c,
            if gelu {
                "matmul_bwd_gelu_bwd_fcproj"
            } else {
                "matmul_bwd_fcproj"
            },
            Step::MatmulBackward {
                rows: n,
                c: 4 * C,
                oc: C,
                precision: cllm_kernels::bf16::Precision::Fp32,
                stores_dweight: false,
                stores_dinp: false,
                dinp: n * 4 * C,
                dweight: 4 * C * C,
                dbias: Some(C),
                dout: n * C,
                inp: n * 4 * C,
                weight: 4 * C * C,
                dpre: gelu.then_some(n * 4 * C),
                pre: gelu.then_some(n * 4 * C),
                panels: None,
            },
            flops(4 * n * C * 4 * C),
            &[],
            true,
        );
    }
    let shape = AttentionShape {
        batch: 1,
        t_len: T,
        channels: C,
        heads: HEADS,
    };
    // Dense causal attention as the plan runs it: the triangle's tiles, FLOPs counted
    // over the tiles computed (forward two products, backward five).
    let blocks = cllm::plan::causal_blocks(T);
    let tiled = |products: usize| (2 * products * T * T * C) as f64 * blocks.fraction(T);
    for (suffix, precision) in [("", Precision::Fp32), ("_bf16", Precision::Bf16)] {
        bench_kernel(
            c,
            &format!("attention_fwd{suffix}"),
            Step::Attention {
                shape,
                blocks: blocks.clone(),
                precision,
                out: n * C,
                lse: HEADS * T,
                qkv: n * 3 * C,
                keep: None,
            },
            flops(tiled(2) as usize),
            &[],
            true,
        );
        bench_kernel(
            c,
            &format!("attention_bwd{suffix}"),
            Step::AttentionBackward {
                shape,
                blocks: blocks.clone(),
                precision,
                dqkv: n * 3 * C,
                dout: n * C,
                qkv: n * 3 * C,
                out: n * C,
                lse: HEADS * T,
                keep: None,
            },
            flops(tiled(5) as usize),
            &[],
            true,
        );
    }
    bench_kernel(
        c,
        "layernorm_fwd",
        Step::LayerNorm {
            rows: n,
            c: C,
            eps: 1e-5,
            out: n * C,
            mean: n,
            rstd: n,
            inp: n * C,
            weight: C,
            bias: C,
        },
        bytes(2 * n * C),
        &[],
        true,
    );
    bench_kernel(
        c,
        "layernorm_bwd",
        Step::LayerNormBackward {
            rows: n,
            c: C,
            dinp: n * C,
            dweight: C,
            dbias: C,
            dout: n * C,
            inp: n * C,
            weight: C,
            mean: n,
            rstd: n,
        },
        bytes(4 * n * C),
        &[],
        true,
    );
    bench_kernel(
        c,
        "gelu_bwd",
        Step::GeluBackward {
            n: n * 4 * C,
            dinp: n * 4 * C,
            dout: n * 4 * C,
            inp: n * 4 * C,
        },
        bytes(4 * n * 4 * C),
        &[],
        true,
    );
    bench_kernel(
        c,
        "residual_fwd",
        Step::Residual {
            n: n * C,
            out: n * C,
            a: n * C,
            b: n * C,
        },
        bytes(3 * n * C),
        &[],
        true,
    );
    bench_kernel(
        c,
        "softmax_xent_fwd",
        Step::SoftmaxXent {
            rows: n,
            v: V,
            losses: n,
            probs: n * V,
            logits: n * V,
            targets: n,
        },
        bytes(2 * n * V),
        &[],
        true,
    );
    let segments = vec![(0, PARAMS, true)];
    let adamw_scalars = [1e-3, 0.9, 0.95, 1e-8, 0.1, 10.0, 20.0, 1.0];
    bench_kernel(
        c,
        "adamw",
        Step::AdamW {
            segments,
            params: PARAMS,
            grads: PARAMS,
            m: PARAMS,
            v: PARAMS,
        },
        bytes(7 * PARAMS),
        &adamw_scalars,
        true,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = kernels
}
criterion_main!(benches);

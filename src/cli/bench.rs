//! `cllm bench`: step time, throughput and the fraction of this machine's measured peak.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cllm::runtime::Backend;
use cllm::runtime::bench::bench as run_bench;
use cllm::{peak, spec};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The spec whose training step to time.
    spec: PathBuf,
    /// Timed steps (after the warm-up), at least 1.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// `jit` (default) or `interp`.
    #[arg(long, default_value = "jit", value_parser = ["interp", "jit"])]
    backend: String,
    /// Threads (the same as `--set plan.threads=N`; default: the spec's, `auto` = every core).
    #[arg(long, value_name = "N")]
    threads: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Override a key (repeatable).
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    overrides: Vec<String>,
}

/// Peak resident memory of this process (VmHWM), in bytes, where the OS says.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn bench(args: BenchArgs) -> miette::Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    if let Some(threads) = args.threads {
        overrides.push(format!("plan.threads={threads}"));
    }
    let spec = spec::load(&args.spec, &overrides)?;
    let base_dir = args.spec.parent().unwrap_or(Path::new("."));
    let backend = if args.backend == "jit" {
        Backend::Jit
    } else {
        Backend::Interp
    };
    let report = run_bench(&spec, base_dir, backend, args.warmup, args.steps)?;
    let threads = report.threads;
    let widest = peak::widest();
    let bits = widest.vector_bits();
    let peak = peak::fma_peak_gflops_at(widest, threads);
    let kernels = cllm_kernels::cpu::isa();
    let precision = spec.train.precision;
    let bf16 = precision == cllm_kernels::Precision::Bf16;
    let unit = cllm_kernels::cpu::bf16_unit();
    let (matrix_peak_name, matrix_peak) = peak::matrix_peak(precision, threads);
    let rss = peak_rss();
    if args.json {
        let value = serde_json::json!({ "spec": args.spec, "backend": args.backend, "threads": threads, "report": report, "fma_peak_gflops": peak, "fma_peak_vector_bits": bits, "gemm_isa": kernels.name(), "precision": precision.name(), "bf16_unit": bf16.then(|| unit.name()), "matrix_peak": matrix_peak_name, "matrix_peak_gflops": matrix_peak, "peak_rss_bytes": rss });
        cllm::outln!(
            "{}",
            serde_json::to_string_pretty(&value).expect("serializes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    cllm::outln!(
        "{} ({} backend, {threads} thread(s)), {} timed steps after {} warm-up:",
        args.spec.display(),
        args.backend,
        report.steps,
        args.warmup
    );
    cllm::outln!(
        "  step      {:.1} ms median ({:.1}–{:.1})",
        report.step_ms_median,
        report.step_ms_min,
        report.step_ms_max
    );
    cllm::outln!("  tokens/s  {:.0}", report.tokens_per_s);
    cllm::outln!(
        "  GFLOP/s   {:.1} of {:.2} GFLOP per step = {:.0}% of the measured {threads}-thread {bits}-bit FMA peak ({:.1} GFLOP/s)",
        report.gflops,
        report.step_gflop,
        100.0 * report.gflops / peak,
        peak
    );
    if bf16 {
        // Emulated bf16 runs on the FMA units: its peak is the line above.
        if unit != cllm_kernels::cpu::Bf16Unit::Emulated {
            cllm::outln!(
                "            = {:.0}% of the measured {threads}-thread {matrix_peak_name} ({matrix_peak:.1} GFLOP/s)",
                100.0 * report.gflops / matrix_peak.max(1e-9)
            );
        }
        cllm::outln!(
            "  kernels   bf16 products (fp32 sums) on {}, {}-bit native GEMM micro-kernels and row passes ({}) in fp32, Cranelift JIT around them",
            unit.describe(),
            kernels.vector_bits(),
            kernels.name()
        );
    } else {
        cllm::outln!(
            "  kernels   {}-bit native GEMM micro-kernels and row passes ({}), Cranelift JIT around them",
            kernels.vector_bits(),
            kernels.name()
        );
    }
    cllm::outln!(
        "  plan      {:.1} ms, JIT {:.1} ms",
        report.plan_ms,
        report.jit_ms
    );
    if let Some(rss) = rss {
        cllm::outln!("  peak RSS  {:.1} MiB", rss as f64 / (1 << 20) as f64);
    }
    cllm::outln!("  kernel time by family (summed over workers; GFLOP/s per thread):");
    for (name, share, gflops) in &report.kernels {
        cllm::outln!(
            "    {name:<32} {:>5.1}%  {gflops:>7.1} GFLOP/s",
            100.0 * share
        );
    }
    Ok(ExitCode::SUCCESS)
}

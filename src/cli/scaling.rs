//! The text of `cllm plan --ranks R`: the split over ranks and the cost model's table.

use std::fmt::Write;

use cllm::machine::rank_counts;
use cllm::plan::Plan;
use cllm::plan::scaling::{Network, Step, exchange_dominates, predict};
use cllm::plan::thread_scaling::{self, ThreadRates};
use cllm::spec::Spec;

pub fn report(
    spec: &Spec,
    plan: &Plan,
    ranks: usize,
    network: &str,
    gflops: Option<f64>,
) -> miette::Result<String> {
    let net = Network::parse(network).map_err(|e| miette::miette!("--network {e}"))?;
    let shards = plan.shards;
    let allowed = rank_counts(shards);
    if !allowed.contains(&ranks) {
        return Err(cllm::machine::RankError::new(ranks, shards).into());
    }
    let (rate, assumed) = flop_rate(gflops, plan.threads)?;
    let finals = cllm::plan::overlap::final_kernels(plan);
    let step = Step {
        flops: plan.step_flops(spec.train.accumulate) as f64,
        params: spec.model.parameter_count() as f64,
        chunks: &plan.param_chunks,
        finals: &finals,
        shards,
        flop_rate: rate,
        memory_bytes_per_s: cllm::peak::triad_gbps() * 1e9,
        overlap: spec.plan.overlap.then_some(plan),
    };
    let mut out = String::new();
    let block = shards / ranks;
    let _ = writeln!(
        out,
        "{ranks} rank(s) × {} thread(s); plan.shards = {shards} splits over {} ranks",
        plan.threads,
        allowed
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in 0..ranks {
        let _ = writeln!(
            out,
            "  rank {r}: shards {}..{}",
            r * block,
            (r + 1) * block - 1
        );
    }
    let one = predict(&step, &net, ranks);
    let _ = writeln!(
        out,
        "each rank sends {:.1} MB a step and receives as much: its subtree sum of the \
         gradient ({:.2}M floats) cut into {ranks} owners' pieces, its own piece's totals back \
         to the {} others, the shards' losses, the stop flag",
        one.sent_bytes / 1e6,
        step.params / 1e6,
        ranks - 1
    );
    let _ = writeln!(out, "{}", rank_memory(plan, &step, ranks));
    let _ = writeln!(
        out,
        "\ncost model (docs/scaling.md): {:.2} GFLOP a step; one process {:.1} GFLOP/s ({assumed}), \
         memory {:.1} GB/s; network {:.1} Gbit/s, {:.0} µs",
        step.flops / 1e9,
        rate / 1e9,
        step.memory_bytes_per_s / 1e9,
        8.0 * net.bytes_per_s / 1e9,
        net.latency_s * 1e6
    );
    let _ = writeln!(
        out,
        "{:>6} {:>12} {:>12} {:>10} {:>9} {:>10} {:>11}",
        "ranks", "compute ms", "exchange ms", "hidden ms", "tree ms", "step ms", "efficiency"
    );
    for r in (0..7).map(|k| 1usize << k) {
        let p = predict(&step, &net, r);
        let _ = writeln!(
            out,
            "{:>6} {:>12.1} {:>12.1} {:>10.1} {:>9.1} {:>10.1} {:>10.0}%",
            r,
            1e3 * p.compute_s,
            1e3 * p.exchange_s,
            1e3 * p.hidden_s,
            1e3 * p.tree_s,
            1e3 * p.step_s,
            100.0 * p.efficiency
        );
    }
    match exchange_dominates(&step, &net) {
        Some(r) => {
            let _ = writeln!(
                out,
                "the exchange takes longer than compute from {r} ranks (ranks past {} need more `plan.shards`)",
                shards
            );
        }
        None => {
            let _ = writeln!(out, "the exchange stays below compute up to 2^16 ranks");
        }
    }
    Ok(out)
}

/// The cost models' FLOP rate of one process on `threads` threads, FLOP/s, and what it
/// is: `--gflops` as given, else 60% of the FMA peak measured now.
pub fn flop_rate(gflops: Option<f64>, threads: usize) -> miette::Result<(f64, String)> {
    match gflops {
        Some(g) if g.is_finite() && g > 0.0 => Ok((g * 1e9, "given".to_string())),
        Some(g) => miette::bail!("--gflops must be positive, not {g}"),
        None => Ok((
            0.6 * cllm::peak::fma_peak_gflops(threads) * 1e9,
            format!("60% of the measured {threads}-thread FMA peak"),
        )),
    }
}

/// The text of `cllm plan --threads N`: the predicted step on 1…128 threads.
pub fn threads_report(spec: &Spec, plan: &Plan, gflops: Option<f64>) -> miette::Result<String> {
    let (rate, assumed) = flop_rate(gflops, 1)?;
    let rates = ThreadRates {
        flops_per_s: rate,
        bytes_per_s: cllm::peak::triad_gbps() * 1e9,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let accumulate = spec.train.accumulate as usize;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nthreads (docs/scaling.md): one thread {:.1} GFLOP/s ({assumed}), {:.1} GB/s; \
         {} shard(s) × {accumulate} micro-batch(es); this machine has {cores} core(s), so \
         rows past {cores} are the model's prediction, not a measurement",
        rates.flops_per_s / 1e9,
        rates.bytes_per_s / 1e9,
        plan.shards,
    );
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>10} {:>14} {:>11}",
        "threads", "workers", "step ms", "unsplit ms", "efficiency"
    );
    let mut counts: Vec<usize> = (0..8).map(|k| 1usize << k).collect();
    if !counts.contains(&plan.threads) {
        counts.push(plan.threads);
        counts.sort_unstable();
    }
    for &n in &counts {
        let p = thread_scaling::predict(plan, accumulate, rates, n);
        let _ = writeln!(
            out,
            "{:>8} {:>8} {:>10.1} {:>14.1} {:>10.0}%{}",
            n,
            n.min(plan.shards),
            1e3 * p.step_s,
            1e3 * p.unsplit_s,
            100.0 * p.efficiency,
            if n == plan.threads {
                "  ← plan.threads"
            } else {
                ""
            }
        );
    }
    let most = *counts.last().expect("thread counts");
    let kinds = thread_scaling::unsplit_kinds(plan, accumulate, rates, most);
    if !kinds.is_empty() {
        let list: Vec<String> = (kinds.iter().take(4))
            .map(|(kind, s)| format!("{kind} {:.1} ms", 1e3 * s))
            .collect();
        let _ = writeln!(
            out,
            "what does not split evenly over {most} threads (beyond an even split): {}",
            list.join(", ")
        );
    }
    Ok(out)
}

/// What one rank holds: the parameters, its chunks' AdamW moments (ZeRO-1), the gradient
/// buffers of its block's schedule, the exchange's two buffers of R pieces, the bf16
/// panels and the workers' arenas.
fn rank_memory(plan: &Plan, step: &Step, ranks: usize) -> String {
    use cllm::spec::human_bytes;
    let float = 4.0;
    let piece = step.piece(ranks);
    let params = float * step.params;
    let moments = match ranks {
        1 => 2.0 * params,
        _ => 2.0 * float * piece,
    };
    let block = plan.shards / ranks;
    let buffers = cllm::plan::grads::schedule(plan.shards, 0..block, plan.workers).buffers;
    let grads = buffers as f64 * params;
    let exchange = match ranks {
        1 => 0.0,
        _ => 2.0 * float * piece * ranks as f64,
    };
    let panels = cllm::plan::panels::panel_bytes(plan) as f64;
    let workers = plan.workers.min(block);
    let arenas = (workers as u64 * plan.arena.peak_bytes) as f64;
    let total = params + moments + grads + exchange + panels + arenas;
    let b = |x: f64| human_bytes(x as u64);
    format!(
        "each rank holds {}: parameters {}, AdamW moments {} (its chunks'), {buffers} gradient \
         buffer(s) {} (for its {block} shard(s)), exchange buffers {}, bf16 panels {}, \
         {} arena(s) {}",
        b(total),
        b(params),
        b(moments),
        b(grads),
        b(exchange),
        b(panels),
        workers,
        b(arenas)
    )
}

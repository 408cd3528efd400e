//! The text of `cllm plan --stages P`: the pipeline cut and its prediction beside data
//! parallelism (`cllm::plan::stages`).

use std::fmt::Write;

use cllm::machine::rank_counts;
use cllm::plan::Plan;
use cllm::plan::scaling::{Network, Step, predict};
use cllm::plan::stages;
use cllm::spec::Spec;

const MB: f64 = 1e6;

pub fn report(
    spec: &Spec,
    plan: &Plan,
    stages: usize,
    network: &str,
    gflops: Option<f64>,
) -> miette::Result<String> {
    let net = Network::parse(network).map_err(|e| miette::miette!("--network {e}"))?;
    let layers = plan.graph.dims.layers;
    if stages == 0 || stages > layers {
        miette::bail!(
            help = "a stage holds at least one block: try --stages 1 to {layers}",
            "--stages {stages}: this model has {layers} block(s) to cut"
        );
    }
    let (rate, assumed) = super::scaling::flop_rate(gflops, plan.threads)?;
    let bandwidth = cllm::peak::triad_gbps() * 1e9;
    let micro_batches = plan.shards * spec.train.accumulate as usize;
    let pipeline = stages::predict(plan, stages, micro_batches, (rate, bandwidth), &net)
        .expect("1 ≤ stages ≤ blocks");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline over {stages} stage(s), 1F1B over {micro_batches} micro-batch(es) (the \
         step's shards × accumulate); run it with `mpiexec -n {stages} cllm run SPEC --set \
         plan.stages={stages}` (docs/scaling.md)"
    );
    let _ = writeln!(
        out,
        "one process: {:.1} GFLOP/s ({assumed}), {:.1} GB/s; network {:.1} Gbit/s, {:.0} µs",
        rate / 1e9,
        bandwidth / 1e9,
        net.bytes_per_s * 8.0 / 1e9,
        net.latency_s * 1e6
    );
    let _ = writeln!(
        out,
        "  {:>5}  {:<24} {:>9}  {:>24}  {:>14}  {:>9}  {:>12}",
        "stage",
        "blocks",
        "params",
        "own arena × in flight",
        "holds (built)",
        "ms/micro",
        "sends/micro"
    );
    for (s, stage) in pipeline.stages.iter().enumerate() {
        let mut blocks = match stage.blocks.len() {
            1 => format!("h.{}", stage.blocks.start),
            _ => format!("h.{}–h.{}", stage.blocks.start, stage.blocks.end - 1),
        };
        if s == 0 {
            blocks = format!("embeddings, {blocks}");
        }
        if stage.blocks.end == layers {
            blocks.push_str(", head");
        }
        let activation_mb = 4.0 * stage.activations as f64 / MB;
        let _ = writeln!(
            out,
            "  {s:>5}  {blocks:<24} {:>8.2}M  {:>3} × {:>7.1} MB = {:>6.0} MB  {:>11.0} MB  {:>9.2}  {:>9.2} MB",
            stage.params as f64 / 1e6,
            stage.in_flight,
            activation_mb,
            stage.in_flight as f64 * activation_mb,
            stage.holds_bytes as f64 / MB,
            stage.seconds * 1e3,
            4.0 * stage.sent_floats as f64 / MB
        );
    }
    let dims = plan.graph.dims;
    let _ = writeln!(
        out,
        "B·T·C = {:.2} MB; bubble (P − 1)/(m + P − 1) = {:.0}%; the parameters two stages \
         touch (the tied wte) sent after AdamW {:.1} ms",
        4.0 * (dims.rows() * dims.c) as f64 / MB,
        100.0 * pipeline.bubble,
        1e3 * pipeline.share_s
    );
    let _ = writeln!(
        out,
        "memory as built: each stage holds only the parameters its kernels touch (the tied \
         wte on the first and the last), gradient buffers of those, the AdamW moments of the \
         chunks it finishes (with replicas, each replica its share) and its arenas in flight; \
         \"holds\" adds what a checkpoint gathers: the whole model's parameters and moments \
         on the first stage, which writes it"
    );
    let dp = if rank_counts(plan.shards).contains(&stages) {
        let finals = cllm::plan::overlap::final_kernels(plan);
        let step = Step {
            flops: plan.step_flops(spec.train.accumulate) as f64,
            params: spec.model.parameter_count() as f64,
            chunks: &plan.param_chunks,
            finals: &finals,
            shards: plan.shards,
            flop_rate: rate,
            memory_bytes_per_s: bandwidth,
            overlap: spec.plan.overlap.then_some(plan),
        };
        let ranks = predict(&step, &net, stages);
        let step_s = pipeline.single_s / stages as f64 + ranks.exchange_s + ranks.tree_s;
        format!(
            "{stages} data-parallel rank(s) {:.1} ms (efficiency {:.0}%)",
            step_s * 1e3,
            100.0 * pipeline.single_s / (stages as f64 * step_s)
        )
    } else {
        format!(
            "{stages} data-parallel ranks: plan.shards = {} does not split over them",
            plan.shards
        )
    };
    let _ = writeln!(
        out,
        "predicted step: one process {:.1} ms; {stages} stage(s) {:.1} ms (efficiency {:.0}%); {dp}",
        pipeline.single_s * 1e3,
        pipeline.step_s * 1e3,
        100.0 * pipeline.efficiency
    );
    Ok(out)
}

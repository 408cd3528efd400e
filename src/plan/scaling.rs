//! `cllm plan --ranks R`: what a run split over R ranks sends, and a cost model of its
//! step time, so the plan past one machine is a number before it is a cluster.
//!
//! Per step, rank r of R computes its S/R shards (a 1/R share of the step's FLOPs) and
//! then exchanges (`machine/ranks.rs`): an all-to-all that gives each owner every rank's
//! subtree sum of its 1/R of the gradient, and, once each owner has run AdamW on its
//! part, an all-gather of the updated parameters (each (R − 1)/R · 4P bytes per rank,
//! in R − 1 rounds of 4P/R), plus small all-gathers of the chunks' Σ g², the shards'
//! losses and the stop flag:
//!
//!   compute(R)  = FLOPs / (R · F)                      F: one process's FLOP rate
//!   exchange(R) = (R − 1) · (5α + 2 · 4p / β)          α latency, β bandwidth (bytes/s),
//!                                                      p the longest owner's run of
//!                                                      floats (≈ P/R: runs are whole
//!                                                      parameter chunks, and every
//!                                                      piece sent is p long)
//!   tree(R)     = 4 · 4P / B          (R > 1)          what the single process's tree
//!                                                      does not: a fill, cutting the
//!                                                      sum into pieces, reading the
//!                                                      R pieces, placing the totals,
//!                                                      at memory bandwidth B
//!   efficiency  = compute(1) / (R · step(R))
//!
//! With `plan.overlap`, the all-to-all counts only what stays exposed after backward
//! (`exposed_all_to_all`).
//!
//! Every float is still summed in the single process's tree order (the bits do not
//! change with R), and the bytes each rank sends, 2(R − 1)/R · 4P, stay under two
//! gradients whatever R, as a ring all-reduce's do; what grows with R is the latency
//! term, 5α(R − 1).

/// A network: bandwidth in bytes per second and latency in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    pub bytes_per_s: f64,
    pub latency_s: f64,
}

impl Network {
    /// `10Gbit,50us`: a bandwidth in Gbit (or Mbit) per second and a latency in µs,
    /// ms or ns.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (bandwidth, latency) = text
            .split_once(',')
            .ok_or_else(|| format!("`{text}`: write bandwidth,latency such as `10Gbit,50us`"))?;
        let number = |s: &str, units: &[(&str, f64)]| -> Result<f64, String> {
            let s = s.trim();
            let (value, scale) = units
                .iter()
                .find_map(|(u, scale)| s.strip_suffix(u).map(|v| (v, *scale)))
                .ok_or_else(|| {
                    let names: Vec<&str> = units.iter().map(|u| u.0).collect();
                    format!("`{s}`: expected a unit among {}", names.join(", "))
                })?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a number"))?;
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("`{s}` must be positive"));
            }
            Ok(value * scale)
        };
        let bits = number(bandwidth, &[("Gbit", 1e9), ("Mbit", 1e6)])?;
        let latency = number(latency, &[("us", 1e-6), ("ms", 1e-3), ("ns", 1e-9)])?;
        Ok(Network {
            bytes_per_s: bits / 8.0,
            latency_s: latency,
        })
    }
}

/// The model's inputs for one spec.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// FLOPs of one step (every shard, every micro-batch).
    pub flops: f64,
    /// Parameters (P): floats in one gradient.
    pub params: f64,
    /// The parameter chunks the owners' pieces are cut from (none: pieces of P/R).
    pub chunks: &'a [super::ParamChunk],
    /// The kernel after which each chunk is final (`overlap::final_kernels`).
    pub finals: &'a [usize],
    /// Shards (S).
    pub shards: usize,
    /// One process's FLOP rate on this step (F), FLOP/s.
    pub flop_rate: f64,
    /// Memory bandwidth of one process (B), bytes/s.
    pub memory_bytes_per_s: f64,
    /// The plan, when the all-to-all overlaps with backward (`plan.overlap`): what of it
    /// stays exposed follows from when each owner's run is final (`overlap.rs`).
    pub overlap: Option<&'a super::Plan>,
}

/// One row of the model: seconds per step and their parts, on `ranks` ranks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub ranks: usize,
    pub compute_s: f64,
    pub exchange_s: f64,
    /// Seconds of the all-to-all hidden behind backward (not in `exchange_s`).
    pub hidden_s: f64,
    pub tree_s: f64,
    pub step_s: f64,
    /// compute(1) / (R · step(R)).
    pub efficiency: f64,
    /// Bytes each rank sends per step: its pieces of the gradient to the owners, its
    /// run's totals back, its shards' losses and the stop flag (to each other rank).
    pub sent_bytes: f64,
}

impl Step<'_> {
    /// Floats of the longest owner's piece over `ranks` (`owners.rs`): the length of
    /// every piece the exchange sends.
    pub fn piece(&self, ranks: usize) -> f64 {
        match self.chunks {
            [] => self.params / ranks as f64,
            chunks => super::owners::Owners::new(chunks, self.finals, ranks).piece(chunks) as f64,
        }
    }
}

pub fn predict(step: &Step, net: &Network, ranks: usize) -> Prediction {
    let r = ranks as f64;
    let compute_s = step.flops / (r * step.flop_rate);
    let message = 4.0 * step.params;
    let piece = 4.0 * step.piece(ranks);
    let piece_s = net.latency_s + piece / net.bytes_per_s;
    let all_to_all = (r - 1.0) * piece_s;
    let exposed = match step.overlap {
        Some(plan) if ranks > 1 => exposed_all_to_all(plan, step, net, ranks, all_to_all),
        _ => all_to_all,
    };
    // The all-to-all, the all-gather of the parameters and three small all-gathers.
    let exchange_s = exposed + (r - 1.0) * (3.0 * net.latency_s + piece_s);
    let tree_s = if ranks > 1 {
        4.0 * message / step.memory_bytes_per_s
    } else {
        0.0
    };
    let step_s = compute_s + exchange_s + tree_s;
    let single = step.flops / step.flop_rate;
    Prediction {
        ranks,
        compute_s,
        exchange_s,
        hidden_s: all_to_all - exposed,
        tree_s,
        step_s,
        efficiency: single / (r * step_s),
        sent_bytes: if ranks > 1 {
            (r - 1.0) * (2.0 * piece + 8.0 * step.shards as f64 / r + 1.0)
        } else {
            0.0
        },
    }
}

/// What of the all-to-all stays exposed when each part of each owner's piece travels as
/// soon as backward has finished it, during the rest of the rank's last pass: owner s
/// receives each part from R − 1 ranks, at its link, no earlier than the part is final
/// (a queue drained at β, α per part); the slowest owner sets the step.
fn exposed_all_to_all(
    plan: &super::Plan,
    step: &Step,
    net: &Network,
    ranks: usize,
    seconds: f64,
) -> f64 {
    if step.chunks.is_empty() {
        return seconds;
    }
    // A block's workers run their last passes side by side, each at its share of F.
    let workers = plan.threads.min(step.shards / ranks).max(1) as f64;
    let pass_flops = plan.kernels.iter().map(|k| k.flops).sum::<u64>() as f64;
    let pass_s = pass_flops * workers / step.flop_rate;
    let after = super::overlap::share_after(plan);
    let owners = super::owners::Owners::new(step.chunks, step.finals, ranks);
    let r = ranks as f64 - 1.0;
    (owners.parts.iter())
        .map(|parts| {
            // Time from the end of backward: negative while backward runs.
            let mut t = f64::NEG_INFINITY;
            for p in parts {
                let ready = -after[p.kernel] * pass_s;
                t = t.max(ready)
                    + net.latency_s
                    + r * 4.0 * p.floats.len() as f64 / net.bytes_per_s;
            }
            t.max(0.0)
        })
        .fold(0.0, f64::max)
        .min(seconds)
}

/// The smallest power-of-two R at which the exchange takes longer than compute.
pub fn exchange_dominates(step: &Step, net: &Network) -> Option<usize> {
    (0..17).map(|k| 1usize << k).find(|&r| {
        let p = predict(step, net, r);
        p.exchange_s > p.compute_s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_the_model_adds_up() {
        let net = Network::parse("10Gbit,50us").unwrap();
        assert_eq!(net.bytes_per_s, 1.25e9);
        assert!((net.latency_s - 50e-6).abs() < 1e-12);
        assert!(Network::parse("10Gbps,50us").is_err());
        assert!(Network::parse("10Gbit").is_err());
        let step = Step {
            flops: 1e12,
            params: 1e7,
            chunks: &[],
            finals: &[],
            shards: 8,
            flop_rate: 1e11,
            memory_bytes_per_s: 2e10,
            overlap: None,
        };
        let one = predict(&step, &net, 1);
        assert_eq!((one.efficiency, one.exchange_s), (1.0, 0.0));
        let two = predict(&step, &net, 2);
        // 10 s of compute halves; twice 20 MB at 1.25 GB/s is 32 ms (+250 µs); tree
        // 4 × 2 ms.
        assert!((two.compute_s - 5.0).abs() < 1e-9);
        assert!((two.exchange_s - 0.03225).abs() < 1e-6);
        assert!((two.tree_s - 0.008).abs() < 1e-9);
        assert!(two.efficiency < 1.0 && two.efficiency > 0.98);
        // The bytes each rank sends approach 2 × 4P and never pass it.
        let sent = |r| predict(&step, &net, r).sent_bytes / (8.0 * step.params);
        assert!((sent(2) - 0.5).abs() < 1e-3 && sent(64) < 1.0 && sent(64) > 0.98);
        // compute 10 s / R against 64 ms·(R − 1)/R + 250 µs·(R − 1): the latency
        // term wins first between 64 and 128 ranks.
        assert_eq!(exchange_dominates(&step, &net), Some(128));
    }
}

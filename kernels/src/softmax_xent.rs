//! Softmax + cross-entropy over the vocabulary, and its gradient, fused.
//!
//! Forward, per position n with target y (positions whose target is [`IGNORE`] do not
//! count): `p = softmax(logits_n)`, `loss_n = −ln p[y]`.
//! The step's loss is `scale · Σ_n loss_n`, with `scale = 1 / (number of counted
//! targets in the whole step)`, so that the reported loss is exactly the one
//! differentiated, however the step is split into micro-batches.
//! Backward: `dlogits_n += scale · (p − onehot(y))` for counted positions.
//!
//! Shapes: logits, probs (N,V); targets, losses (N).

use crate::real::Real;

/// A target that is not scored (padding, or a prompt position).
pub const IGNORE: u32 = u32::MAX;

/// Writes probabilities and per-position losses; returns Σ loss over counted positions.
pub fn softmax_xent_forward<T: Real>(
    losses: &mut [T],
    probs: &mut [T],
    logits: &[T],
    targets: &[u32],
    v: usize,
) -> f64 {
    let mut total = 0.0;
    for (n, row) in logits.chunks_exact(v).enumerate() {
        let max = row
            .iter()
            .map(|x| x.to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|x| (x.to_f64() - max).exp()).sum();
        let p = &mut probs[n * v..(n + 1) * v];
        for i in 0..v {
            p[i] = T::from_f64((row[i].to_f64() - max).exp() / sum);
        }
        let target = targets[n];
        losses[n] = if target == IGNORE {
            T::default()
        } else {
            // −ln p[y], computed from the logits so it stays finite when p[y] underflows.
            let loss = max + sum.ln() - row[target as usize].to_f64();
            total += loss;
            T::from_f64(loss)
        };
    }
    total
}

/// Accumulates `scale · (p − onehot(y))` into `dlogits` for counted positions.
pub fn softmax_xent_backward<T: Real>(
    dlogits: &mut [T],
    probs: &[T],
    targets: &[u32],
    scale: f64,
    v: usize,
) {
    for (n, &target) in targets.iter().enumerate() {
        if target == IGNORE {
            continue;
        }
        let p = &probs[n * v..(n + 1) * v];
        let d = &mut dlogits[n * v..(n + 1) * v];
        for i in 0..v {
            let onehot = if i == target as usize { 1.0 } else { 0.0 };
            d[i] = T::from_f64(d[i].to_f64() + scale * (p[i].to_f64() - onehot));
        }
    }
}

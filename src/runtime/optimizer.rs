//! The optimizer step: learning-rate schedule, clipping by global norm, AdamW.

use cllm_kernels::adamw::AdamWStep;

use crate::machine::Machine;
use crate::spec::{Optimizer, Schedule, Train};

/// The learning rate at 0-based `step`: linear warm-up to the peak, then the decay.
pub fn learning_rate(train: &Train, step: u64) -> f64 {
    let peak = train.optimizer.lr();
    let warmup = train.schedule.warmup();
    let (min_lr, cosine) = match train.schedule {
        Schedule::Constant { .. } => (peak, false),
        Schedule::Linear { min_lr, .. } => (min_lr.unwrap_or(peak / 10.0), false),
        Schedule::Cosine { min_lr, .. } => (min_lr.unwrap_or(peak / 10.0), true),
    };
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = train.steps.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    let shape = if cosine {
        0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    } else {
        1.0 - progress
    };
    min_lr + shape * (peak - min_lr)
}

/// What one optimizer step did.
pub struct StepStats {
    pub lr: f64,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f64,
}

/// Clips and applies the accumulated gradients; `step` is 0-based.
pub fn apply(machine: &mut Machine<f32>, train: &Train, step: u64) -> StepStats {
    let grad_norm = machine.grad_norm_squared().sqrt();
    let grad_scale = match train.clip_grad {
        Some(max) if grad_norm > max => max / grad_norm,
        _ => 1.0,
    };
    let lr = learning_rate(train, step);
    let Optimizer::AdamW {
        betas,
        eps,
        weight_decay,
        ..
    } = train.optimizer;
    machine.adamw(AdamWStep {
        lr,
        beta1: betas.0,
        beta2: betas.1,
        eps,
        weight_decay,
        t: step + 1,
        grad_scale,
    });
    StepStats { lr, grad_norm }
}

#[cfg(test)]
mod tests {
    use super::learning_rate;
    use crate::spec::{Schedule, Train};

    #[test]
    fn cosine_warms_up_then_decays_to_min_lr() {
        let train = Train {
            steps: 110,
            schedule: Schedule::Cosine {
                warmup: 10,
                min_lr: Some(1e-4),
            },
            ..Train::default()
        };
        let peak = train.optimizer.lr();
        assert!((learning_rate(&train, 0) - peak / 10.0).abs() < 1e-12);
        assert!((learning_rate(&train, 9) - peak).abs() < 1e-12);
        assert!((learning_rate(&train, 10) - peak).abs() < 1e-12);
        assert!((learning_rate(&train, 60) - (1e-4 + 0.5 * (peak - 1e-4))).abs() < 1e-12);
        assert!((learning_rate(&train, 110) - 1e-4).abs() < 1e-12);
    }
}

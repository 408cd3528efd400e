//! The kernel IR as text, one line per step: what `cllm plan --kernels` prints and what
//! the snapshot of bench-xs's kernel list pins.
//!
//! ```text
//! 6 forward matmul_bias_gelu  (17.43 MFLOP, 834.0 KiB)
//!     Matmul { rows: 128, c: 128, oc: 512 }  out=h.0.mlp.c_fc.out inp=h.0.ln_2 … bias=… gelu_out=…
//! ```

use std::fmt::Write as _;

use super::ir::Step;
use super::{Phase, Plan, human_bytes};

/// Every plan kernel, its cost, and its steps with their named slots bound to tensors.
pub fn kernel_listing(plan: &Plan) -> String {
    let mut out = String::new();
    for (k, kernel) in plan.kernels.iter().enumerate() {
        let phase = match kernel.phase {
            Phase::Forward => "forward",
            Phase::Recompute => "recompute",
            Phase::Backward => "backward",
        };
        let _ = writeln!(
            out,
            "{k} {phase} {}  ({:.2} MFLOP, {})",
            kernel.name,
            kernel.flops as f64 / 1e6,
            human_bytes(kernel.bytes)
        );
        for call in &kernel.steps {
            let _ = write!(out, "    {} ", step_text(call, plan.graph.dims.t));
            call.visit(|slot, &tensor| {
                let _ = write!(out, " {}={}", slot.name, plan.graph.tensor(tensor).name);
            });
            out.push('\n');
        }
    }
    out
}

/// A step's kind and shapes; attention's tile lists summarised.
fn step_text<S>(step: &Step<S>, t: usize) -> String {
    match step {
        Step::Attention {
            shape,
            blocks,
            keep,
            ..
        }
        | Step::AttentionBackward {
            shape,
            blocks,
            keep,
            ..
        } => {
            let masked = keep.is_some();
            let kind = if matches!(step, Step::Attention { .. }) {
                "Attention"
            } else {
                "AttentionBackward"
            };
            let tiles: usize = blocks.lists.iter().map(Vec::len).sum();
            format!(
                "{kind} {{ {shape:?}, masked: {masked}, {tiles} tiles of {0}×{0} ({1:.1}% of T×T) }}",
                blocks.block,
                100.0 * blocks.fraction(t)
            )
        }
        other => other.shape_text(),
    }
}

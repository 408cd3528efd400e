//! The weights' bf16 panels (`train.precision = bf16`): each weight matrix that a
//! product reads as its right operand is rounded to bf16 once per step, into two
//! tensors of its own laid out as the matrix units read them — weightᵀ for the forward
//! product, weight for the input gradient's — instead of being re-rounded and re-packed
//! by every shard's every product. The values are the products' own rounding of the
//! weight (the reference machine still rounds inside its products); only where the
//! rounding happens, and how often, changes.
//!
//! The panels live beside the parameters (`Role::Panels`, in the fixed region, so the
//! memory plan and `cllm plan` count them), and the machine refreshes them from the
//! parameters before any step that reads them (`Machine::refresh_panels`).

use cllm_kernels::bf16::Precision;
use cllm_kernels::gemm::panels_len;

use super::ir::{Step, StepCall};
use super::{BYTES_PER_FLOAT, Plan};
use crate::graph::{OpKind, Role};

/// The panels pass (bf16 mode only, before memory is planned): reads the graph's
/// forward products; adds two `Panels` tensors per weight parameter they read, writes
/// one `WeightPanels` step per weight into `plan.panels` and adds the panels' bytes to
/// `plan.fixed_bytes`. Lowering points each product at them ([`point_products`]).
pub fn weight_panels(mut plan: Plan) -> Plan {
    if plan.precision != Precision::Bf16 {
        return plan;
    }
    let Plan {
        graph,
        panels,
        fixed_bytes,
        ..
    } = &mut plan;
    let products = (graph.forward.iter()).filter(|op| matches!(op.kind, OpKind::Matmul { .. }));
    let weights: Vec<_> = products.map(|op| op.inputs[1]).collect();
    for weight in weights {
        let tensor = graph.tensor(weight);
        let (Role::Param(param), &[oc, c]) = (tensor.role, tensor.shape.as_slice()) else {
            continue;
        };
        if panels
            .iter()
            .any(|p| matches!(p, Step::WeightPanels { weight: w, .. } if *w == weight))
        {
            continue; // a weight two products read (none today) gets one pair
        }
        let name = tensor.name.clone();
        let [forward, backward] = [(c, oc, "forward"), (oc, c, "backward")].map(|(k, n, which)| {
            let floats = panels_len(k, n) / 2;
            *fixed_bytes += BYTES_PER_FLOAT * floats as u64;
            let name = format!("{name}.bf16_{which}");
            graph.add_tensor(name, vec![floats], Role::Panels(param))
        });
        panels.push(Step::WeightPanels {
            c,
            oc,
            forward,
            backward,
            weight,
        });
    }
    plan.passes.push("panels");
    plan
}

/// Points every product of `steps` whose weight has panels at the layout it reads:
/// `Matmul` at the forward panels, `MatmulBackward` (its input gradient) at the
/// backward ones.
pub fn point_products(panels: &[StepCall], steps: &mut [StepCall]) {
    let of = |weight| {
        panels.iter().find_map(|p| match *p {
            Step::WeightPanels {
                weight: w,
                forward,
                backward,
                ..
            } if w == weight => Some((forward, backward)),
            _ => None,
        })
    };
    for step in steps {
        match step {
            Step::Matmul { weight, panels, .. } => *panels = of(*weight).map(|p| p.0),
            Step::MatmulBackward { weight, panels, .. } => *panels = of(*weight).map(|p| p.1),
            _ => {}
        }
    }
}

/// The panels' total bytes (both layouts of every weight).
pub fn panel_bytes(plan: &Plan) -> u64 {
    let floats: usize = (plan.graph.tensors.iter())
        .filter(|t| matches!(t.role, Role::Panels(_)))
        .map(|t| t.len())
        .sum();
    BYTES_PER_FLOAT * floats as u64
}

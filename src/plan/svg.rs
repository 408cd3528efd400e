//! `cllm plan --svg`: buffer lifetimes against kernel order, one rectangle per arena
//! tensor at its offset, so reuse (and wasted space) is visible at a glance.

use std::fmt::Write;

use super::{Phase, Plan};
use crate::graph::Role;

/// An SVG picture of the arena: x is the kernel index, y the offset.
pub fn lifetimes_svg(plan: &Plan) -> String {
    let (width, height) = (1200.0, 700.0);
    let kernels = plan.kernels.len().max(1) as f64;
    let peak = (plan.arena.peak_bytes / 4).max(1) as f64;
    let x = |k: usize| 60.0 + (width - 80.0) * k as f64 / kernels;
    let y = |offset: usize| 30.0 + (height - 60.0) * offset as f64 / peak;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="60" y="18">arena: {} peak, {} lower bound, {} naive; x = kernel, y = offset</text>"#,
        super::human_bytes(plan.arena.peak_bytes),
        super::human_bytes(plan.arena.lower_bound_bytes),
        super::human_bytes(plan.arena.naive_bytes)
    );
    if let Some(first_backward) = plan.kernels.iter().position(|k| k.phase != Phase::Forward) {
        let bx = x(first_backward);
        let _ = writeln!(
            svg,
            r##"<line x1="{bx}" y1="25" x2="{bx}" y2="{}" stroke="#888" stroke-dasharray="4"/>"##,
            height - 25.0
        );
    }
    for (id, slot) in plan.slots.iter().enumerate() {
        let Some(slot) = slot else { continue };
        let tensor = &plan.graph.tensors[id];
        let color = match tensor.role {
            Role::Grad => "#e9967a",
            Role::Saved => "#9acd32",
            _ => "#6495ed",
        };
        let (x0, x1) = (x(slot.first), x(slot.last + 1));
        let (y0, y1) = (y(slot.offset), y(slot.offset + slot.len));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="{color}" stroke="#333" stroke-width="0.3"><title>{} {:?} [{}..{}] @{}</title></rect>"##,
            (x1 - x0).max(1.0),
            (y1 - y0).max(0.5),
            tensor.name,
            tensor.shape,
            slot.first,
            slot.last,
            slot.offset
        );
    }
    svg.push_str("</svg>\n");
    svg
}

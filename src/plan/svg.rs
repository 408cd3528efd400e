//! `cllm plan --svg`: buffer lifetimes against kernel order, one rectangle per arena
//! tensor at its offset, so reuse (and wasted space) is visible at a glance. Axes with
//! ticks (kernel index; offset in MiB), a legend of the buffer kinds and the
//! forward/backward boundary, a label on every rectangle large enough to hold its name,
//! and every name, shape and lifetime on hover.

use std::fmt::Write;

use super::{Phase, Plan};
use crate::graph::Role;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 760.0;
/// The plot area: left, top, right, bottom edges in pixels.
const AREA: (f64, f64, f64, f64) = (80.0, 70.0, 1180.0, 710.0);

/// Colours of the buffer kinds, as the legend names them.
const KINDS: [(&str, &str); 3] = [
    ("#6495ed", "activation"),
    ("#9acd32", "saved for backward"),
    ("#e9967a", "activation gradient"),
];

/// About `count` round tick values from 0 to `max`: 1, 2 or 5 times a power of ten apart.
fn ticks(max: f64, count: f64) -> Vec<f64> {
    if max <= 0.0 {
        return vec![0.0];
    }
    let raw = max / count;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|&v| v <= max * 1.0001)
        .collect()
}

/// An SVG picture of the arena: x is the kernel index, y the offset.
pub fn lifetimes_svg(plan: &Plan) -> String {
    let (left, top, right, bottom) = AREA;
    let kernels = plan.kernels.len().max(1) as f64;
    let peak = (plan.arena.peak_bytes / 4).max(1) as f64;
    let x = |k: f64| left + (right - left) * k / kernels;
    let y = |floats: f64| top + (bottom - top) * floats / peak;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="15">one worker's arena: {} peak, {} lower bound (most bytes live at once), {} if nothing were shared</text>"#,
        super::human_bytes(plan.arena.peak_bytes),
        super::human_bytes(plan.arena.lower_bound_bytes),
        super::human_bytes(plan.arena.naive_bytes)
    );
    // Legend: the kinds, then the boundary line.
    let mut lx = left;
    for (colour, name) in KINDS {
        let _ = writeln!(
            svg,
            r##"<rect x="{lx}" y="36" width="14" height="14" fill="{colour}" stroke="#333" stroke-width="0.5"/><text x="{}" y="47">{name}</text>"##,
            lx + 20.0
        );
        lx += 40.0 + 7.0 * name.len() as f64;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{lx}" y1="43" x2="{}" y2="43" stroke="#555" stroke-dasharray="4"/><text x="{}" y="47">forward | backward</text>"##,
        lx + 24.0,
        lx + 30.0
    );
    for (id, slot) in plan.slots.iter().enumerate() {
        let Some(slot) = slot else { continue };
        let tensor = &plan.graph.tensors[id];
        let colour = match tensor.role {
            Role::Grad => KINDS[2].0,
            Role::Saved => KINDS[1].0,
            _ => KINDS[0].0,
        };
        let (x0, x1) = (x(slot.first as f64), x(slot.last as f64 + 1.0));
        let (y0, y1) = (y(slot.offset as f64), y((slot.offset + slot.len) as f64));
        let (w, h) = ((x1 - x0).max(1.0), (y1 - y0).max(0.5));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{y0:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}" stroke="#333" stroke-width="0.3"><title>{} {:?}: kernels {}..={}, offset {}</title></rect>"##,
            tensor.name,
            tensor.shape,
            slot.first,
            slot.last,
            super::human_bytes(super::BYTES_PER_FLOAT * slot.offset as u64)
        );
        // A label where the name fits (about 6 px a character at 10 px).
        if w > 6.0 * tensor.name.len() as f64 + 6.0 && h >= 12.0 {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="black" pointer-events="none">{}</text>"#,
                x0 + 3.0,
                y0 + h.min(30.0) / 2.0 + 4.0,
                tensor.name
            );
        }
    }
    if let Some(first_backward) = plan.kernels.iter().position(|k| k.phase != Phase::Forward) {
        let bx = x(first_backward as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{bx}" y1="{top}" x2="{bx}" y2="{bottom}" stroke="#555" stroke-dasharray="4"/>"##
        );
    }
    // Axes, ticks and their titles.
    let _ = writeln!(
        svg,
        r##"<path d="M{left},{top} V{bottom} H{right}" fill="none" stroke="black"/>"##
    );
    for k in ticks(kernels, 10.0) {
        let tx = x(k);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx}" y1="{bottom}" x2="{tx}" y2="{}" stroke="black"/><text x="{tx}" y="{}" text-anchor="middle">{k}</text>"##,
            bottom + 5.0,
            bottom + 18.0
        );
    }
    let mib = peak * super::BYTES_PER_FLOAT as f64 / (1u64 << 20) as f64;
    for m in ticks(mib, 8.0) {
        let ty = y(m * (1u64 << 20) as f64 / 4.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{ty}" x2="{left}" y2="{ty}" stroke="black"/><text x="{}" y="{}" text-anchor="end">{m}</text>"##,
            left - 5.0,
            left - 8.0,
            ty + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">kernel (in execution order)</text>
<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">offset in the arena (MiB)</text>"#,
        (left + right) / 2.0,
        bottom + 38.0,
        (top + bottom) / 2.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::ticks;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(45.0, 10.0),
            [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0]
        );
        assert_eq!(ticks(3.4, 8.0), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        assert_eq!(ticks(0.0, 8.0), [0.0]);
    }
}

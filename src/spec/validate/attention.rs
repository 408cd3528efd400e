//! The attention pattern's parameters, against the context they cut.

use super::super::ast::format_number;
use super::super::choices::{Attention, Coords};
use super::super::types::Spec;
use super::Checker;

pub(super) fn attention(c: &mut Checker<'_>, spec: &Spec) {
    let context = spec.model.context;
    let keys = &["model.attention"];
    let window_ok = |w: u64| w >= 1 && w <= context;
    let window_help =
        format!("the window counts keys per query, from 1 to the context ({context})");
    match &spec.model.attention {
        Attention::Dense => {}
        Attention::Window { window } => {
            c.require(
                window_ok(*window),
                keys,
                format!("window({window}) must be between 1 and the context ({context})"),
                &window_help,
            );
        }
        Attention::Strided { stride, window } => {
            c.require(
                *stride >= 1 && *stride <= context,
                keys,
                format!("stride {stride} must be between 1 and the context ({context})"),
                "strided(stride, window) keeps every stride-th earlier position",
            );
            c.require(
                window_ok(*window),
                keys,
                format!("window {window} must be between 1 and the context ({context})"),
                &window_help,
            );
        }
        Attention::Primes { window } => {
            c.require(
                window_ok(*window),
                keys,
                format!("primes window {window} must be between 1 and the context ({context})"),
                &window_help,
            );
        }
        Attention::Lattice {
            coords,
            basis,
            radius,
            window,
        } => {
            c.require(
                window_ok(*window),
                keys,
                format!("lattice window {window} must be between 1 and the context ({context})"),
                &window_help,
            );
            c.require(*radius > 0.0, keys, format!("lattice radius must be positive, found {}", format_number(*radius)), "the radius bounds ‖v‖ of the lattice vectors a query reaches back by; try `radius = 2`");
            c.require(
                *radius <= context as f64,
                keys,
                format!(
                    "lattice radius {} is larger than the context",
                    format_number(*radius)
                ),
                "a radius beyond the context adds no keys; try `radius = 2`",
            );
            if let Coords::Grid { width } = coords {
                c.require(
                    *width >= 1 && *width <= context,
                    keys,
                    format!("grid({width}) must be between 1 and the context ({context})"),
                    "grid(w) places position p at (p mod w, p div w)",
                );
            }
            let square = basis.len() == 2 && basis.iter().all(|row| row.len() == 2);
            c.require_labelled(
                square,
                keys,
                "not 2×2",
                "the lattice basis must be 2×2, e.g. `basis = [[1, 0], [0, 2]]`".into(),
                "positions live in the plane, so the basis has two rows of two integers",
            );
            if square {
                let det = basis[0][0] as i128 * basis[1][1] as i128
                    - basis[0][1] as i128 * basis[1][0] as i128;
                c.require_labelled(
                    det != 0,
                    keys,
                    "singular",
                    "the lattice basis is singular (determinant 0)".into(),
                    "the two rows must be linearly independent, e.g. `[[1, 0], [0, 2]]`",
                );
            }
        }
    }
}

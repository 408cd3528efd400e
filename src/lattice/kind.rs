//! What a pattern is, in this module's own terms (the spec's `model.attention` is
//! translated into it by the planner, so lattice/ knows nothing of specs or training).

use serde::Serialize;

/// Which keys q ≤ p each query p may attend to (always causal, always the diagonal).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum PatternKind {
    /// Every earlier position.
    Dense,
    /// The last `window` positions.
    Window { window: usize },
    /// The last `window` positions and every `stride`-th before.
    Strided { stride: usize, window: usize },
    /// The last `window` positions, and every q whose distance p − q is a prime.
    Primes { window: usize },
    /// The last `window` positions, and every q with x(q) = x(p) − v for a lattice
    /// vector v, 0 < ‖v‖ ≤ radius, of the lattice spanned by the rows of `basis`.
    Lattice {
        placement: Placement,
        basis: Vec<Vec<i64>>,
        radius: f64,
        window: usize,
    },
}

/// Where a position sits in the plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Placement {
    /// Position p at (p mod width, p div width).
    Grid { width: u64 },
    /// Position p at its place on the Ulam spiral.
    Ulam,
}

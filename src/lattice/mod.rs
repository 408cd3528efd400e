//! Lattice geometry for sparse attention, independent of training: exact LLL
//! reduction, Babai's nearest plane, Fincke–Pohst short-vector enumeration, Ulam-spiral
//! and grid coordinates — and the attention patterns built from them.
//!
//! A pattern says which keys q ≤ p each query p may attend to (always causal, always
//! the diagonal). `lattice(coords, basis, radius, window)`: the last `window`
//! positions, and every q with x(q) = x(p) − v for a nonzero vector v of the lattice
//! spanned by `basis` (LLL-reduced first) with ‖v‖ ≤ radius.

mod coords;
mod enumerate;
mod kind;
mod lll;
mod pattern;
mod rational;

pub use coords::{grid, grid_inverse, ulam, ulam_inverse};
pub use enumerate::short_vectors;
pub use kind::{PatternKind, Placement};
pub use lll::{gram_schmidt, lll, nearest_plane};
pub use pattern::{BlockStats, Pattern, Reach, mask_svg};
pub use rational::Rat;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LatticeError {
    #[error("the basis is singular: its rows are linearly dependent")]
    Singular,
    #[error("the lattice computation overflowed 128-bit integers; use a smaller basis")]
    Overflow,
}

/// LLL's default Lovász parameter, δ = 0.99.
pub fn default_delta() -> Rat {
    Rat::new(99, 100).expect("a valid fraction")
}

//! Fincke–Pohst enumeration: every lattice vector v = Σ xᵢbᵢ with 0 < ‖v‖ ≤ r.
//!
//! With Gram–Schmidt data, ‖v‖² = Σᵢ Bᵢ·(xᵢ + Σⱼ>ᵢ μⱼᵢxⱼ)²; fixing x from the last
//! coordinate down, each xᵢ lies in an interval around −Σⱼ>ᵢ μⱼᵢxⱼ of half-width
//! √((r² − partial)/Bᵢ). The search bounds use f64 with a little slack; every vector
//! found is then checked exactly in integers, so rounding can neither add nor (with the
//! slack) drop a vector.

use super::LatticeError;
use super::lll::gram_schmidt;

/// Every nonzero lattice vector of norm at most `radius`, sorted by (‖v‖², v).
pub fn short_vectors(basis: &[Vec<i64>], radius: f64) -> Result<Vec<Vec<i64>>, LatticeError> {
    let b: Vec<Vec<i128>> = basis
        .iter()
        .map(|row| row.iter().map(|&x| x as i128).collect())
        .collect();
    let gs = gram_schmidt(&b)?;
    let n = b.len();
    let mu: Vec<Vec<f64>> = gs
        .mu
        .iter()
        .map(|row| row.iter().map(|m| m.to_f64()).collect())
        .collect();
    let norms: Vec<f64> = gs.norms.iter().map(|r| r.to_f64()).collect();
    let r2 = radius * radius;
    let slack = 1e-9 * (1.0 + r2);
    let mut found = Vec::new();
    let mut x = vec![0i64; n];
    search(n, &mu, &norms, r2 + slack, 0.0, &mut x, &mut |x| {
        let v: Vec<i64> = (0..basis[0].len())
            .map(|k| (0..n).map(|i| x[i] * basis[i][k]).sum())
            .collect();
        let norm2: i128 = v.iter().map(|&c| c as i128 * c as i128).sum();
        if norm2 > 0 && (norm2 as f64) <= r2 * (1.0 + 1e-12) {
            found.push((norm2, v));
        }
    });
    found.sort();
    found.dedup();
    Ok(found.into_iter().map(|(_, v)| v).collect())
}

/// Fixes x[level−1], then recurses to the coordinates below it.
fn search(
    level: usize,
    mu: &[Vec<f64>],
    norms: &[f64],
    bound: f64,
    partial: f64,
    x: &mut [i64],
    visit: &mut impl FnMut(&[i64]),
) {
    if level == 0 {
        visit(x);
        return;
    }
    let i = level - 1;
    let center: f64 = -(i + 1..x.len())
        .map(|j| mu[j][i] * x[j] as f64)
        .sum::<f64>();
    let half = ((bound - partial).max(0.0) / norms[i]).sqrt();
    let (lo, hi) = (
        (center - half).ceil() as i64,
        (center + half).floor() as i64,
    );
    for xi in lo..=hi {
        x[i] = xi;
        let d = xi as f64 - center;
        let next = partial + norms[i] * d * d;
        if next <= bound {
            search(i, mu, norms, bound, next, x, visit);
        }
    }
    x[i] = 0;
}

//! LLL reduction (Lenstra–Lenstra–Lovász) and Babai's nearest-plane CVP, in exact
//! rational arithmetic. Bases are rows of integers.

use super::LatticeError;
use super::rational::Rat;

/// Gram–Schmidt data of a basis: μ[i][j] = ⟨bᵢ, b*ⱼ⟩ / ⟨b*ⱼ, b*ⱼ⟩ and B[i] = ⟨b*ᵢ, b*ᵢ⟩.
pub struct GramSchmidt {
    pub mu: Vec<Vec<Rat>>,
    pub norms: Vec<Rat>,
    pub vectors: Vec<Vec<Rat>>,
}

fn dot(a: &[Rat], b: &[Rat]) -> Result<Rat, LatticeError> {
    a.iter()
        .zip(b)
        .try_fold(Rat::ZERO, |acc, (x, y)| acc.checked_add(x.checked_mul(*y)?))
}

fn to_rat(v: &[i128]) -> Vec<Rat> {
    v.iter().map(|&x| Rat::int(x)).collect()
}

/// Gram–Schmidt orthogonalisation; a dependent basis is [`LatticeError::Singular`].
pub fn gram_schmidt(basis: &[Vec<i128>]) -> Result<GramSchmidt, LatticeError> {
    let n = basis.len();
    let mut vectors: Vec<Vec<Rat>> = Vec::with_capacity(n);
    let mut mu = vec![vec![Rat::ZERO; n]; n];
    let mut norms = Vec::with_capacity(n);
    for i in 0..n {
        let b = to_rat(&basis[i]);
        let mut star = b.clone();
        for j in 0..i {
            mu[i][j] = dot(&b, &vectors[j])?.checked_div(norms[j])?;
            for (s, v) in star.iter_mut().zip(&vectors[j]) {
                *s = s.checked_sub(mu[i][j].checked_mul(*v)?)?;
            }
        }
        let norm = dot(&star, &star)?;
        if norm == Rat::ZERO {
            return Err(LatticeError::Singular);
        }
        norms.push(norm);
        vectors.push(star);
    }
    Ok(GramSchmidt { mu, norms, vectors })
}

/// The LLL-reduced basis of the lattice spanned by `basis`'s rows, with Lovász
/// parameter `delta` in (1/4, 1) (0.99 is the usual choice): size-reduced
/// (|μᵢⱼ| ≤ ½) and `B[k] ≥ (δ − μ²ₖ,ₖ₋₁)·B[k−1]`.
pub fn lll(basis: &[Vec<i64>], delta: Rat) -> Result<Vec<Vec<i64>>, LatticeError> {
    let mut b: Vec<Vec<i128>> = basis
        .iter()
        .map(|row| row.iter().map(|&x| x as i128).collect())
        .collect();
    let n = b.len();
    let mut gs = gram_schmidt(&b)?;
    let mut k = 1;
    while k < n {
        for j in (0..k).rev() {
            let q = gs.mu[k][j].round();
            if q != 0 {
                for i in 0..b[k].len() {
                    let step = q.checked_mul(b[j][i]).ok_or(LatticeError::Overflow)?;
                    b[k][i] = b[k][i].checked_sub(step).ok_or(LatticeError::Overflow)?;
                }
                gs = gram_schmidt(&b)?;
            }
        }
        let mu = gs.mu[k][k - 1];
        let bound = delta
            .checked_sub(mu.checked_mul(mu)?)?
            .checked_mul(gs.norms[k - 1])?;
        if gs.norms[k] >= bound {
            k += 1;
        } else {
            b.swap(k, k - 1);
            gs = gram_schmidt(&b)?;
            k = (k - 1).max(1);
        }
    }
    b.iter()
        .map(|row| {
            row.iter()
                .map(|&x| i64::try_from(x).map_err(|_| LatticeError::Overflow))
                .collect()
        })
        .collect()
}

/// Babai's nearest-plane algorithm: a lattice vector close to `target` (exact within
/// 2^(n/2) of the closest for an LLL-reduced basis; the closest one in dimension 2
/// for a reduced basis in practice). Returns (the vector, its coefficients).
pub fn nearest_plane(
    basis: &[Vec<i64>],
    target: &[Rat],
) -> Result<(Vec<i64>, Vec<i64>), LatticeError> {
    let b: Vec<Vec<i128>> = basis
        .iter()
        .map(|row| row.iter().map(|&x| x as i128).collect())
        .collect();
    let gs = gram_schmidt(&b)?;
    let mut w = target.to_vec();
    let mut coefficients = vec![0i64; b.len()];
    for i in (0..b.len()).rev() {
        let c = dot(&w, &gs.vectors[i])?.checked_div(gs.norms[i])?.round();
        coefficients[i] = i64::try_from(c).map_err(|_| LatticeError::Overflow)?;
        for (x, y) in w.iter_mut().zip(&b[i]) {
            *x = x.checked_sub(Rat::int(c.checked_mul(*y).ok_or(LatticeError::Overflow)?))?;
        }
    }
    let mut vector = vec![0i64; target.len()];
    for (i, c) in coefficients.iter().enumerate() {
        for (v, x) in vector.iter_mut().zip(&basis[i]) {
            *v = v
                .checked_add(c.checked_mul(*x).ok_or(LatticeError::Overflow)?)
                .ok_or(LatticeError::Overflow)?;
        }
    }
    Ok((vector, coefficients))
}

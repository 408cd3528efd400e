//! Positions as points of Z²: `grid(w)` rows of w, and the Ulam spiral.

/// `grid(w)`: position p at (p mod w, p div w).
pub fn grid(width: u64, p: u64) -> (i64, i64) {
    ((p % width) as i64, (p / width) as i64)
}

/// The inverse of [`grid`], for points with 0 ≤ x < w and y ≥ 0.
pub fn grid_inverse(width: u64, (x, y): (i64, i64)) -> Option<u64> {
    (x >= 0 && (x as u64) < width && y >= 0).then(|| y as u64 * width + x as u64)
}

/// Ulam's spiral: 0 at the origin, 1 to its right, then counter-clockwise rings:
/// 0 (0,0), 1 (1,0), 2 (1,1), 3 (0,1), 4 (−1,1), 5 (−1,0), 6 (−1,−1), 7 (0,−1),
/// 8 (1,−1), 9 (2,−1), … Ring k holds the positions (2k−1)² … (2k+1)² − 1.
pub fn ulam(p: u64) -> (i64, i64) {
    let mut k: i64 = 0;
    while ((2 * k + 1) * (2 * k + 1)) as u64 <= p {
        k += 1;
    }
    let n = p as i64;
    let t = 2 * k;
    let m = (t + 1) * (t + 1) - 1;
    if n >= m - t {
        return (k - (m - n), -k);
    }
    let m = m - t;
    if n >= m - t {
        return (-k, -k + (m - n));
    }
    let m = m - t;
    if n >= m - t {
        return (-k + (m - n), k);
    }
    (k, k - (m - n - t))
}

/// The inverse of [`ulam`]: every point of Z² is on the spiral exactly once.
pub fn ulam_inverse((x, y): (i64, i64)) -> u64 {
    let k = x.abs().max(y.abs());
    let t = 2 * k;
    let m = (t + 1) * (t + 1) - 1;
    let n = if y == -k {
        m - k + x
    } else if x == -k {
        m - t - k - y
    } else if y == k {
        m - 2 * t - k - x
    } else {
        m - 3 * t - k + y
    };
    n as u64
}

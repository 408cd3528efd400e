//! Attention patterns: which keys each query may attend to, as a T×T causal mask, and
//! the block-sparse view of it (query block → key blocks, a mask only where a block is
//! partial) that sparse kernels iterate.

use serde::Serialize;

use super::{LatticeError, PatternKind, Placement, coords, default_delta, lll, short_vectors};

/// How a lattice pattern reaches back, for `cllm plan`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reach {
    /// The LLL-reduced basis (δ = 0.99).
    pub reduced_basis: Vec<Vec<i64>>,
    /// Every lattice vector v with 0 < ‖v‖ ≤ radius.
    pub vectors: Vec<Vec<i64>>,
}

/// One attention pattern over T positions.
#[derive(Clone, Debug, Serialize)]
pub struct Pattern {
    pub t: usize,
    /// Allowed keys of each query, ascending; each ends with the query itself.
    #[serde(skip)]
    pub keys: Vec<Vec<u32>>,
    /// Present for lattice patterns.
    pub reach: Option<Reach>,
}

/// Blocks of the block-sparse layout.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BlockStats {
    pub block: usize,
    /// (query block, key block) pairs with at least one allowed key.
    pub blocks: usize,
    /// Of those, the ones whose every causal pair is allowed (no mask needed).
    pub full: usize,
    /// Blocks of dense causal attention at the same block size.
    pub dense_blocks: usize,
}

impl Pattern {
    /// The pattern `kind` draws over `t` positions.
    pub fn new(kind: &PatternKind, t: usize) -> Result<Pattern, LatticeError> {
        let mut reach = None;
        let keys = match kind {
            PatternKind::Dense => (0..t).map(|p| (0..=p as u32).collect()).collect(),
            PatternKind::Window { window } => (0..t)
                .map(|p| (p.saturating_sub(*window - 1) as u32..=p as u32).collect())
                .collect(),
            PatternKind::Strided { stride, window } => (0..t)
                .map(|p| {
                    (0..=p)
                        .filter(|q| p - q < *window || (p - q) % *stride == 0)
                        .map(|q| q as u32)
                        .collect()
                })
                .collect(),
            PatternKind::Primes { window } => {
                // One sieve of Eratosthenes up to the context, shared by every query.
                let prime = sieve(t);
                (0..t)
                    .map(|p| {
                        (0..=p)
                            .filter(|q| p - q < *window || prime[p - q])
                            .map(|q| q as u32)
                            .collect()
                    })
                    .collect()
            }
            PatternKind::Lattice {
                placement: system,
                basis,
                radius,
                window,
            } => {
                let reduced = lll(basis, default_delta())?;
                let vectors = short_vectors(&reduced, *radius)?;
                let point = |p: usize| match system {
                    Placement::Grid { width } => coords::grid(*width, p as u64),
                    Placement::Ulam => coords::ulam(p as u64),
                };
                let position = |x: (i64, i64)| match system {
                    Placement::Grid { width } => coords::grid_inverse(*width, x),
                    Placement::Ulam => Some(coords::ulam_inverse(x)),
                };
                let keys = (0..t)
                    .map(|p| {
                        let (x, y) = point(p);
                        let mut keys: Vec<u32> = (p.saturating_sub(*window - 1)..=p)
                            .map(|q| q as u32)
                            .collect();
                        for v in &vectors {
                            if let Some(q) = position((x - v[0], y - v[1]))
                                && (q as usize) < p
                            {
                                keys.push(q as u32);
                            }
                        }
                        keys.sort_unstable();
                        keys.dedup();
                        keys
                    })
                    .collect();
                reach = Some(Reach {
                    reduced_basis: reduced,
                    vectors,
                });
                keys
            }
        };
        Ok(Pattern { t, keys, reach })
    }

    /// Keys per query: (min, mean, max).
    pub fn keys_per_query(&self) -> (usize, f64, usize) {
        let counts = self.keys.iter().map(Vec::len);
        let total: usize = counts.clone().sum();
        (
            counts.clone().min().unwrap_or(0),
            total as f64 / self.t.max(1) as f64,
            counts.max().unwrap_or(0),
        )
    }

    /// Allowed pairs over the pairs of dense causal attention, T(T+1)/2.
    pub fn density(&self) -> f64 {
        let total: usize = self.keys.iter().map(Vec::len).sum();
        total as f64 / (self.t * (self.t + 1) / 2).max(1) as f64
    }

    /// The T×T mask as 1.0 (may attend) and 0.0, row = query.
    pub fn mask(&self) -> Vec<f32> {
        let mut mask = vec![0.0; self.t * self.t];
        for (p, keys) in self.keys.iter().enumerate() {
            for &q in keys {
                mask[p * self.t + q as usize] = 1.0;
            }
        }
        mask
    }

    /// For each query block, the key blocks with at least one kept key, ascending
    /// (always ending with the diagonal block).
    pub fn block_lists(&self, block: usize) -> Vec<Vec<usize>> {
        let n = self.t.div_ceil(block);
        let mut lists: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (p, keys) in self.keys.iter().enumerate() {
            for &q in keys {
                lists[p / block].push(q as usize / block);
            }
        }
        for list in &mut lists {
            list.sort_unstable();
            list.dedup();
        }
        lists
    }

    /// The block-sparse view at `block` × `block` tiles.
    pub fn blocks(&self, block: usize) -> BlockStats {
        let n = self.t.div_ceil(block);
        let mut count = vec![0usize; n * n];
        for (p, keys) in self.keys.iter().enumerate() {
            for &q in keys {
                count[(p / block) * n + q as usize / block] += 1;
            }
        }
        let (mut blocks, mut full, mut dense_blocks) = (0, 0, 0);
        for qb in 0..n {
            for kb in 0..=qb {
                dense_blocks += 1;
                let causal: usize = (qb * block..((qb + 1) * block).min(self.t))
                    .map(|p| (p + 1).min((kb + 1) * block).saturating_sub(kb * block))
                    .sum();
                let c = count[qb * n + kb];
                blocks += (c > 0) as usize;
                full += (c > 0 && c == causal) as usize;
            }
        }
        BlockStats {
            block,
            blocks,
            full,
            dense_blocks,
        }
    }
}

/// The mask as an SVG picture: query rows down, key columns across, at most 512 cells
/// a side; each cell is shaded by the share of its pairs that are kept.
pub fn mask_svg(pattern: &Pattern) -> String {
    use std::fmt::Write as _;
    let t = pattern.t;
    let cells = t.min(512);
    let per = t.div_ceil(cells);
    let n = t.div_ceil(per);
    let mut kept = vec![0u32; n * n];
    for (p, keys) in pattern.keys.iter().enumerate() {
        for &q in keys {
            kept[(p / per) * n + q as usize / per] += 1;
        }
    }
    // Cells of at least 2 px, the grid at least ~400 px across, the picture wide enough
    // for its two title lines whatever T is (at T = 16 the title was cut off).
    let px = (400 / n).max(2);
    let grid = px * n;
    let (left, top) = (20, 52);
    let width = (grid + 2 * left).max(480);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">",
        grid + top + 20
    );
    let _ = writeln!(
        svg,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">attention mask, T = {t}: {:.1}% of dense causal</text>\n\
         <text x=\"{left}\" y=\"38\">query ↓, key →; a cell is {per}×{per} positions, darker = more kept</text>",
        100.0 * pattern.density()
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{grid}\" height=\"{grid}\" fill=\"white\" stroke=\"#999\"/>"
    );
    for row in 0..n {
        for col in 0..=row {
            let count = kept[row * n + col];
            if count == 0 {
                continue;
            }
            let share = count as f64 / (per * per) as f64;
            let shade = (255.0 * (1.0 - share.min(1.0))) as u8;
            let _ = writeln!(
                svg,
                "<rect x=\"{}\" y=\"{}\" width=\"{px}\" height=\"{px}\" fill=\"rgb({shade},{shade},255)\"/>",
                left + px * col,
                top + px * row
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// `prime[n]` for n < `t`: a sieve of Eratosthenes.
pub fn sieve(t: usize) -> Vec<bool> {
    let mut prime = vec![true; t];
    for n in prime.iter_mut().take(2) {
        *n = false;
    }
    let mut n = 2;
    while n * n < t {
        if prime[n] {
            for multiple in (n * n..t).step_by(n) {
                prime[multiple] = false;
            }
        }
        n += 1;
    }
    prime
}

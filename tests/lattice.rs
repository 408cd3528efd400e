//! The lattice math against known answers and brute force: LLL on textbook bases,
//! its defining conditions on random ones, Babai's nearest plane, Fincke–Pohst
//! enumeration against a brute-force search, Ulam-spiral and grid coordinates, and the
//! attention patterns built from them.

use cllm::lattice::{
    Pattern, Rat, default_delta, gram_schmidt, grid, grid_inverse, lll, nearest_plane,
    short_vectors, ulam, ulam_inverse,
};
use cllm::lattice::{PatternKind, Placement};
use cllm::rng::Rng;

fn sorted_up_to_sign(mut basis: Vec<Vec<i64>>) -> Vec<Vec<i64>> {
    for v in &mut basis {
        if v.iter().find(|&&x| x != 0).is_some_and(|&x| x < 0) {
            v.iter_mut().for_each(|x| *x = -*x);
        }
    }
    basis.sort();
    basis
}

#[test]
fn lll_reduces_textbook_bases() {
    // Wikipedia's example (δ = 3/4): reduced to [[0, 1, 0], [1, 0, 1], [-1, 0, 2]].
    // Its third vector ties with (−2, 0, 1) (|μ| = ½, norm² 5 both); we round ½ up.
    let reduced = lll(
        &[vec![1, 1, 1], vec![-1, 0, 2], vec![3, 5, 6]],
        Rat::new(3, 4).unwrap(),
    )
    .unwrap();
    assert_eq!(reduced, vec![vec![0, 1, 0], vec![1, 0, 1], vec![-2, 0, 1]]);
    // Known reduced bases, disguised by unimodular transforms, come back (up to sign
    // and order): [[1, 2], [3, −1]] as [[14, 7], [9, 4]] (U = [[5, 3], [3, 2]]), and
    // [[3, 1], [−1, 4]] as [[19, 15], [8, 7]] (U = [[7, 2], [3, 1]]).
    for (disguised, known) in [
        (vec![vec![14, 7], vec![9, 4]], vec![vec![1, 2], vec![3, -1]]),
        (
            vec![vec![19, 15], vec![8, 7]],
            vec![vec![3, 1], vec![-1, 4]],
        ),
    ] {
        let reduced = lll(&disguised, default_delta()).unwrap();
        assert_eq!(sorted_up_to_sign(reduced), sorted_up_to_sign(known));
    }
    // Hoffstein, Pipher, Silverman, Example 6.69 (entries ~6.7e7): the exact rationals
    // outgrow 128 bits, which is an error, never a wrong basis.
    assert_eq!(
        lll(
            &[vec![66586820, 65354729], vec![6513996, 6393464]],
            default_delta()
        ),
        Err(cllm::lattice::LatticeError::Overflow)
    );
    // A skewed basis of Z² reduces to unit vectors.
    let reduced = lll(&[vec![1, 0], vec![7, 1]], default_delta()).unwrap();
    assert_eq!(sorted_up_to_sign(reduced), vec![vec![0, 1], vec![1, 0]]);
}

#[test]
fn lll_meets_its_conditions_on_random_bases() {
    let mut rng = Rng::new(3);
    let mut pick = |range: i64| (rng.next_u64() % (2 * range as u64 + 1)) as i64 - range;
    for _ in 0..200 {
        let n = 2 + (pick(1).unsigned_abs() as usize);
        let basis: Vec<Vec<i64>> = (0..n).map(|_| (0..n).map(|_| pick(50)).collect()).collect();
        let wide: Vec<Vec<i128>> = basis
            .iter()
            .map(|r| r.iter().map(|&x| x as i128).collect())
            .collect();
        if gram_schmidt(&wide).is_err() {
            assert!(
                lll(&basis, default_delta()).is_err(),
                "a singular basis is an error"
            );
            continue;
        }
        let reduced = lll(&basis, default_delta()).unwrap();
        let wide_reduced: Vec<Vec<i128>> = reduced
            .iter()
            .map(|r| r.iter().map(|&x| x as i128).collect())
            .collect();
        let gs = gram_schmidt(&wide_reduced).unwrap();
        let half = Rat::new(1, 2).unwrap();
        for i in 0..n {
            for j in 0..i {
                let mu = gs.mu[i][j];
                assert!(
                    mu <= half && Rat::ZERO.checked_sub(mu).unwrap() <= half,
                    "size-reduced"
                );
            }
        }
        for k in 1..n {
            let mu = gs.mu[k][k - 1];
            let bound = default_delta()
                .checked_sub(mu.checked_mul(mu).unwrap())
                .unwrap()
                .checked_mul(gs.norms[k - 1])
                .unwrap();
            assert!(gs.norms[k] >= bound, "Lovász condition");
        }
        // The same lattice: every original vector is a lattice point of the reduced basis.
        for v in &basis {
            let target: Vec<Rat> = v.iter().map(|&x| Rat::int(x as i128)).collect();
            assert_eq!(&nearest_plane(&reduced, &target).unwrap().0, v);
        }
    }
}

#[test]
fn babai_finds_nearby_lattice_points() {
    let basis = vec![vec![2280, -1001], vec![-1324, -2376]];
    let q = |x: i64, d: i128| Rat::new(x as i128 * 10 + d, 10).unwrap();
    for (a, b) in [(0, 0), (1, 0), (3, -2), (-5, 7)] {
        let point = [a * 2280 - b * 1324, -a * 1001 - b * 2376];
        // Far less than half of the shortest Gram–Schmidt length away.
        let target = [q(point[0], 13), q(point[1], -7)];
        let (found, coefficients) = nearest_plane(&basis, &target).unwrap();
        assert_eq!(found, point.to_vec());
        assert_eq!(coefficients, vec![a, b]);
    }
    let identity = vec![vec![1, 0], vec![0, 1]];
    let target = [Rat::new(24, 10).unwrap(), Rat::new(-16, 10).unwrap()];
    assert_eq!(nearest_plane(&identity, &target).unwrap().0, vec![2, -2]);
}

#[test]
fn enumeration_agrees_with_brute_force() {
    let bases = [
        vec![vec![1, 0], vec![0, 1]],
        vec![vec![1, 0], vec![0, 2]],
        vec![vec![3, 1], vec![1, 2]],
        vec![vec![1, 0], vec![7, 1]], // not reduced: enumeration must still be complete
        vec![vec![2, 1, 0], vec![0, 2, 1], vec![1, 0, 3]],
    ];
    for basis in &bases {
        for radius in [1.0, 1.5, 2.0, 2.9, 4.0] {
            let found = short_vectors(basis, radius).unwrap();
            let n = basis.len();
            let mut brute = Vec::new();
            let range = if n == 2 { -40i64..=40 } else { -12..=12 };
            let mut x = vec![*range.start(); n];
            loop {
                let v: Vec<i64> = (0..basis[0].len())
                    .map(|k| (0..n).map(|i| x[i] * basis[i][k]).sum())
                    .collect();
                let norm2: i64 = v.iter().map(|c| c * c).sum();
                if norm2 > 0 && (norm2 as f64) <= radius * radius {
                    brute.push((norm2, v));
                }
                let mut i = 0;
                while i < n && x[i] == *range.end() {
                    x[i] = *range.start();
                    i += 1;
                }
                if i == n {
                    break;
                }
                x[i] += 1;
            }
            brute.sort();
            brute.dedup();
            let brute: Vec<Vec<i64>> = brute.into_iter().map(|(_, v)| v).collect();
            assert_eq!(found, brute, "basis {basis:?}, radius {radius}");
        }
    }
    // Z² within radius 2: 4 unit vectors, 4 diagonals, 4 at distance 2.
    assert_eq!(
        short_vectors(&[vec![1, 0], vec![0, 1]], 2.0).unwrap().len(),
        12
    );
}

#[test]
fn ulam_spiral_coordinates() {
    let first = [
        (0, 0),
        (1, 0),
        (1, 1),
        (0, 1),
        (-1, 1),
        (-1, 0),
        (-1, -1),
        (0, -1),
        (1, -1),
        (2, -1),
        (2, 0),
        (2, 1),
        (2, 2),
        (1, 2),
        (0, 2),
        (-1, 2),
        (-2, 2),
        (-2, 1),
        (-2, 0),
        (-2, -1),
        (-2, -2),
        (-1, -2),
        (0, -2),
        (1, -2),
        (2, -2),
        (3, -2),
    ];
    for (p, &point) in first.iter().enumerate() {
        assert_eq!(ulam(p as u64), point, "position {p}");
    }
    for p in 0..100u64 {
        assert_eq!(ulam_inverse(ulam(p)), p, "round trip of {p}");
    }
    for p in 0..20_000u64 {
        let ((x0, y0), (x1, y1)) = (ulam(p), ulam(p + 1));
        assert_eq!(
            (x1 - x0).abs() + (y1 - y0).abs(),
            1,
            "{p} → {} is one step",
            p + 1
        );
        assert_eq!(ulam_inverse(ulam(p)), p);
    }
    for k in 0..50i64 {
        // Odd squares end each ring at its lower-right corner.
        assert_eq!(ulam(((2 * k + 1) * (2 * k + 1) - 1) as u64), (k, -k));
    }
    for x in -20..=20 {
        for y in -20..=20 {
            assert_eq!(ulam(ulam_inverse((x, y))), (x, y));
        }
    }
}

#[test]
fn grid_coordinates() {
    for p in 0..1000 {
        assert_eq!(grid_inverse(16, grid(16, p)), Some(p));
    }
    assert_eq!(grid(16, 35), (3, 2));
    assert_eq!(grid_inverse(16, (16, 0)), None);
    assert_eq!(grid_inverse(16, (-1, 3)), None);
}

/// primes(window = w) against its definition, brute force: q ≤ p is kept iff
/// p − q < w or p − q is prime (trial division), for ragged T and several windows.
#[test]
fn primes_pattern_is_its_definition() {
    let is_prime = |n: usize| {
        n >= 2
            && (2..n)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    for (t, window) in [
        (1, 1),
        (2, 1),
        (37, 1),
        (61, 4),
        (100, 7),
        (257, 16),
        (600, 64),
    ] {
        let pattern = Pattern::new(&PatternKind::Primes { window }, t).unwrap();
        assert_eq!(pattern.keys.len(), t);
        for (p, keys) in pattern.keys.iter().enumerate() {
            let expected: Vec<u32> = (0..=p)
                .filter(|&q| p - q < window || is_prime(p - q))
                .map(|q| q as u32)
                .collect();
            assert_eq!(keys, &expected, "T {t}, window {window}, query {p}");
        }
    }
    // 2, 3, 5, 7, 11, 13, 17, 19 back from 20, and the window of 2 (20 and 19).
    let pattern = Pattern::new(&PatternKind::Primes { window: 2 }, 32).unwrap();
    assert_eq!(pattern.keys[20], vec![1, 3, 7, 9, 13, 15, 17, 18, 19, 20]);
}

#[test]
fn patterns_are_causal_and_count_right() {
    let t = 64;
    let window = Pattern::new(&PatternKind::Window { window: 8 }, t).unwrap();
    for (p, keys) in window.keys.iter().enumerate() {
        assert_eq!(keys.len(), (p + 1).min(8));
        assert_eq!(*keys.last().unwrap() as usize, p);
    }
    let strided = Pattern::new(
        &PatternKind::Strided {
            stride: 16,
            window: 4,
        },
        t,
    )
    .unwrap();
    assert_eq!(strided.keys[40], vec![8, 24, 37, 38, 39, 40]);
    let dense = Pattern::new(&PatternKind::Dense, t).unwrap();
    assert_eq!(dense.density(), 1.0);
    let blocks = dense.blocks(16);
    assert_eq!((blocks.blocks, blocks.dense_blocks), (10, 10));
    assert_eq!(
        blocks.full, 10,
        "every causal pair of every block is allowed"
    );
    assert_eq!(
        Pattern::new(&PatternKind::Window { window: 8 }, t)
            .unwrap()
            .blocks(16)
            .full,
        0
    );
    // grid(4), Z², radius 1, window 1: a position sees itself, its left neighbour in
    // the same row and the position above it.
    let lattice = PatternKind::Lattice {
        placement: Placement::Grid { width: 4 },
        basis: vec![vec![1, 0], vec![0, 1]],
        radius: 1.0,
        window: 1,
    };
    let pattern = Pattern::new(&lattice, 16).unwrap();
    assert_eq!(pattern.keys[0], vec![0]);
    assert_eq!(
        pattern.keys[4],
        vec![0, 4],
        "column 0 has no left neighbour"
    );
    assert_eq!(pattern.keys[9], vec![5, 8, 9]);
    let reach = pattern.reach.as_ref().unwrap();
    assert_eq!(reach.vectors.len(), 4);
    for keys in &pattern.keys {
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "ascending, no repeats"
        );
    }
    // The basis [[1, 0], [0, 2]] reaches every second row.
    let every_other = PatternKind::Lattice {
        placement: Placement::Grid { width: 4 },
        basis: vec![vec![1, 0], vec![0, 2]],
        radius: 2.0,
        window: 1,
    };
    assert_eq!(
        Pattern::new(&every_other, 16).unwrap().keys[9],
        vec![1, 8, 9]
    );
}

//! A small, fixed pseudo-random generator (xoshiro256**, seeded by SplitMix64).
//!
//! Ours rather than a crate's because a run must replay bit for bit forever: the
//! algorithm can never change under us, and its whole state is four words that a
//! checkpoint stores and restores.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            state: [next(), next(), next(), next()],
        }
    }

    /// An independent generator for a named purpose (e.g. "data", "init").
    pub fn derive(seed: u64, purpose: &str) -> Rng {
        let tag = purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Rng::new(seed ^ tag)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n), without modulo bias worth measuring (n ≪ 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box–Muller; one value per call, for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Moves on as `n` calls of [`Rng::normal`] would, without drawing them.
    pub fn skip_normals(&mut self, n: usize) {
        for _ in 0..2 * n {
            self.uniform();
        }
    }

    /// The raw state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn streams_are_fixed_by_the_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn skipping_normals_moves_as_drawing_them() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        (0..5).for_each(|_| _ = a.normal());
        b.skip_normals(5);
        assert_eq!(a.state(), b.state());
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let (mut mean, mut sq) = (0.0, 0.0);
        for _ in 0..n {
            let x = rng.normal();
            mean += x;
            sq += x * x;
        }
        mean /= n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let below: Vec<u64> = (0..1000).map(|_| rng.below(10)).collect();
        assert!(below.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| below.contains(&d)));
    }
}

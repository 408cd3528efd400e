//! Exact rationals over i128 with checked arithmetic: the LLL and Babai code runs on
//! these, so a reduced basis is exact (no floating-point drift in Gram–Schmidt), and an
//! overflow is an error, never a wrong answer.

use std::cmp::Ordering;

use super::LatticeError;

/// `num / den`, always reduced, `den > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rat {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

type R = Result<Rat, LatticeError>;

impl Rat {
    pub const ZERO: Rat = Rat { num: 0, den: 1 };

    pub fn new(num: i128, den: i128) -> R {
        if den == 0 {
            return Err(LatticeError::Overflow);
        }
        let g = gcd(num, den);
        let sign = if den < 0 { -1 } else { 1 };
        Ok(Rat {
            num: sign * num / g,
            den: sign * den / g,
        })
    }

    pub fn int(n: i128) -> Rat {
        Rat { num: n, den: 1 }
    }

    pub fn checked_add(self, o: Rat) -> R {
        let num = (self.num.checked_mul(o.den))
            .zip(o.num.checked_mul(self.den))
            .and_then(|(a, b)| a.checked_add(b));
        let den = self.den.checked_mul(o.den);
        Rat::new(
            num.ok_or(LatticeError::Overflow)?,
            den.ok_or(LatticeError::Overflow)?,
        )
    }

    pub fn checked_sub(self, o: Rat) -> R {
        self.checked_add(Rat {
            num: -o.num,
            den: o.den,
        })
    }

    pub fn checked_mul(self, o: Rat) -> R {
        let num = self.num.checked_mul(o.num).ok_or(LatticeError::Overflow)?;
        let den = self.den.checked_mul(o.den).ok_or(LatticeError::Overflow)?;
        Rat::new(num, den)
    }

    pub fn checked_div(self, o: Rat) -> R {
        if o.num == 0 {
            return Err(LatticeError::Singular);
        }
        self.checked_mul(Rat {
            num: o.den,
            den: o.num,
        })
    }

    /// The nearest integer (halves round up, as ⌊x + ½⌋).
    pub fn round(self) -> i128 {
        (2 * self.num + self.den).div_euclid(2 * self.den)
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl PartialOrd for Rat {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rat {
    fn cmp(&self, other: &Self) -> Ordering {
        // Denominators are positive; compare in i128 when it fits, else in f64.
        match (
            self.num.checked_mul(other.den),
            other.num.checked_mul(self.den),
        ) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.to_f64().total_cmp(&other.to_f64()),
        }
    }
}

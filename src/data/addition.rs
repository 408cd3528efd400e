//! The built-in addition task: lines `a+b=s` with a and b of `digits` digits
//! (zero-padded) and s of `digits + 1` digits, optionally written least significant
//! digit first (reversed sums are easier to learn left to right, as in minGPT).
//!
//! A sequence is one problem: the model reads `123+456=` and is scored only on the
//! sum's digits and the closing newline.

use std::collections::HashSet;

use cllm_kernels::softmax_xent::IGNORE;

use crate::rng::Rng;

#[derive(Clone, Debug)]
pub struct Addition {
    pub digits: usize,
    pub reverse: bool,
    /// Held-out problems, never drawn for training.
    pub held_out: Vec<(u64, u64)>,
    held_out_set: HashSet<(u64, u64)>,
}

impl Addition {
    /// The task, with `held_out` distinct problems drawn from `seed`.
    pub fn new(digits: usize, reverse: bool, held_out: usize, seed: u64) -> Addition {
        let limit = 10u64.pow(digits as u32);
        let held_out = held_out.min((limit * limit / 2) as usize);
        let mut rng = Rng::derive(seed, "addition held-out problems");
        let mut held_out_set = HashSet::new();
        let mut problems = Vec::with_capacity(held_out);
        while problems.len() < held_out {
            let p = (rng.below(limit), rng.below(limit));
            if held_out_set.insert(p) {
                problems.push(p);
            }
        }
        Addition {
            digits,
            reverse,
            held_out: problems,
            held_out_set,
        }
    }

    /// The prompt `a+b=` of a problem.
    pub fn prompt(&self, (a, b): (u64, u64)) -> String {
        format!("{a:0d$}+{b:0d$}=", d = self.digits)
    }

    /// The answer the model should write after the prompt (without the newline).
    pub fn answer(&self, (a, b): (u64, u64)) -> String {
        let sum = format!("{:0d$}", a + b, d = self.digits + 1);
        if self.reverse {
            sum.chars().rev().collect()
        } else {
            sum
        }
    }

    /// A training problem: uniform over all pairs except the held-out ones.
    pub fn draw(&self, rng: &mut Rng) -> (u64, u64) {
        let limit = 10u64.pow(self.digits as u32);
        loop {
            let p = (rng.below(limit), rng.below(limit));
            if !self.held_out_set.contains(&p) {
                return p;
            }
        }
    }

    /// Writes one problem as a sequence of `t` inputs and `t` targets: inputs are the
    /// line shifted right, padded with newlines; only the sum and its newline are scored.
    pub fn write(&self, problem: (u64, u64), tokens: &mut [u32], targets: &mut [u32]) {
        let line = format!("{}{}\n", self.prompt(problem), self.answer(problem));
        let line = line.as_bytes();
        let first_scored = 2 * self.digits + 1; // the input position of `=`
        for i in 0..tokens.len() {
            tokens[i] = line.get(i).map_or(b'\n' as u32, |&b| b as u32);
            targets[i] = match line.get(i + 1) {
                Some(&b) if i >= first_scored => b as u32,
                _ => IGNORE,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_written_with_the_sum_scored() {
        let task = Addition::new(3, true, 10, 1);
        let (mut tokens, mut targets) = (vec![0; 16], vec![0; 16]);
        task.write((123, 456), &mut tokens, &mut targets);
        let text: String = tokens.iter().map(|&t| t as u8 as char).collect();
        assert_eq!(text, "123+456=9750\n\n\n\n");
        let scored: String = targets
            .iter()
            .filter(|&&t| t != IGNORE)
            .map(|&t| t as u8 as char)
            .collect();
        assert_eq!(scored, "9750\n");
        assert_eq!(targets[6], IGNORE);
        assert_eq!(targets[7], b'9' as u32);
    }

    #[test]
    fn held_out_problems_are_never_drawn() {
        let task = Addition::new(1, false, 40, 3);
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            assert!(!task.held_out.contains(&task.draw(&mut rng)));
        }
    }
}

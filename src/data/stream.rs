//! A token stream: tokenised text held in memory, or token shards mapped from disk and
//! read where a window falls (never copied whole). Windows may cross from one part to
//! the next: the parts are one stream, in order.

use std::sync::Arc;

use crate::files::Mapped;

/// One run of tokens.
#[derive(Clone)]
pub enum Part {
    /// Tokens in memory.
    Owned(Arc<Vec<u32>>, std::ops::Range<usize>),
    /// Little-endian uint16 tokens in a mapped file: `range` counts tokens from byte
    /// `offset` (past any header).
    U16 {
        map: Arc<Mapped>,
        offset: usize,
        range: std::ops::Range<usize>,
    },
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Owned(_, range) | Part::U16 { range, .. } => range.len(),
        }
    }

    /// The first `at` tokens and the rest.
    fn split(&self, at: usize) -> (Part, Part) {
        let cut = |range: &std::ops::Range<usize>| {
            (range.start..range.start + at, range.start + at..range.end)
        };
        match self {
            Part::Owned(v, range) => {
                let (a, b) = cut(range);
                (Part::Owned(v.clone(), a), Part::Owned(v.clone(), b))
            }
            Part::U16 { map, offset, range } => {
                let (a, b) = cut(range);
                let part = |range| Part::U16 {
                    map: map.clone(),
                    offset: *offset,
                    range,
                };
                (part(a), part(b))
            }
        }
    }

    /// Copies tokens `start..start + out.len()` of this part into `out`.
    fn read(&self, start: usize, out: &mut [u32]) {
        match self {
            Part::Owned(v, range) => {
                out.copy_from_slice(&v[range.start + start..][..out.len()]);
            }
            Part::U16 { map, offset, range } => {
                let from = offset + 2 * (range.start + start);
                let bytes = &map[from..from + 2 * out.len()];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]) as u32;
                }
            }
        }
    }
}

/// Parts read as one stream.
#[derive(Clone, Default)]
pub struct Tokens {
    parts: Vec<Part>,
    /// `starts[i]`: the stream position of part i's first token; one more entry, the
    /// stream's length.
    starts: Vec<usize>,
}

impl Tokens {
    pub fn new(parts: Vec<Part>) -> Tokens {
        let parts: Vec<Part> = parts.into_iter().filter(|p| p.len() > 0).collect();
        let mut starts = vec![0];
        for p in &parts {
            starts.push(starts.last().unwrap() + p.len());
        }
        Tokens { parts, starts }
    }

    /// Tokens in memory.
    pub fn owned(tokens: Vec<u32>) -> Tokens {
        let n = tokens.len();
        Tokens::new(vec![Part::Owned(Arc::new(tokens), 0..n)])
    }

    pub fn len(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `at` tokens and the rest.
    pub fn split(&self, at: usize) -> (Tokens, Tokens) {
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        for (part, &start) in self.parts.iter().zip(&self.starts) {
            if start + part.len() <= at {
                head.push(part.clone());
            } else if start >= at {
                tail.push(part.clone());
            } else {
                let (a, b) = part.split(at - start);
                head.push(a);
                tail.push(b);
            }
        }
        (Tokens::new(head), Tokens::new(tail))
    }

    /// Copies tokens `start..start + out.len()` into `out`, across parts.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        let (mut at, mut done) = (start, 0);
        let mut i = self.starts.partition_point(|&s| s <= at) - 1;
        while done < out.len() {
            let part = &self.parts[i];
            let within = at - self.starts[i];
            let n = (part.len() - within).min(out.len() - done);
            part.read(within, &mut out[done..done + n]);
            (at, done, i) = (at + n, done + n, i + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cross_parts_and_splits_keep_order() {
        let a = Tokens::owned((0..10).collect());
        let (head, tail) = a.split(4);
        assert_eq!((head.len(), tail.len()), (4, 6));
        // Re-join two owned parts and a split one: 0..4, 4..10 as one stream.
        let joined = Tokens::new([head.parts, tail.parts].concat());
        let mut out = [0u32; 7];
        joined.read(2, &mut out);
        assert_eq!(out, [2, 3, 4, 5, 6, 7, 8]);
        let (x, y) = joined.split(7);
        let mut out = [0u32; 3];
        y.read(0, &mut out);
        assert_eq!(out, [7, 8, 9]);
        let mut out = [0u32; 7];
        x.read(0, &mut out);
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6]);
    }
}

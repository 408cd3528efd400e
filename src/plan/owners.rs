//! Which rank owns which parameter chunks over R ranks: the owner receives every rank's
//! block sum of its chunks, finishes their tree, runs AdamW on them and keeps their
//! moments (`machine/ranks.rs`).
//!
//! Cut by finishing time: the chunks are dealt largest first, each to the owner holding
//! the fewest floats so far (pieces within one small chunk of each other), and chunks of
//! one size in the order backward finishes them (the kernel after which each is final,
//! [`super::overlap::final_kernels`]) — nearly every chunk of a large model is full
//! size, so they go round the owners in finishing order. Every owner then holds about
//! 1/R of the gradient *and* about 1/R of what each kernel finishes: what backward
//! finishes last (the embeddings, the first block) is spread over all owners instead of
//! arriving at one, and each piece can leave in parts while backward runs. An owner's
//! piece is its chunks in finishing order; its [`Part`]s cut it where the finishing
//! kernel changes, merged up to [`MIN_PART`] floats (one message each; at most about
//! [`MAX_PARTS`]).

use std::ops::Range;

use super::ParamChunk;

/// Floats a part of a piece holds at least (unless it is the piece's last): fewer,
/// larger messages, each still sent as soon as its last chunk is final.
pub const MIN_PART: usize = 1 << 16;

/// Parts of one piece at most (about): a part's index is its MPI tag, and MPI promises
/// tags up to 32 767 only; longer pieces get longer parts.
pub const MAX_PARTS: usize = 4096;

/// A run of an owner's piece sent as one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The kernel after which every chunk of the part is final.
    pub kernel: usize,
    /// Its chunks: indices into the owner's chunk list.
    pub chunks: Range<usize>,
    /// Its floats in the owner's piece.
    pub floats: Range<usize>,
}

/// The owners of a step over R ranks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owners {
    /// Per owner: its chunks (indices into the plan's chunks), in piece order.
    pub chunks: Vec<Vec<usize>>,
    /// Per chunk: where it is in its owner's piece (float offset).
    pub local: Vec<usize>,
    /// Per owner: its piece cut into parts, in the order backward finishes them.
    pub parts: Vec<Vec<Part>>,
    /// Per owner: the index of its first part among all owners' parts in order.
    pub first_part: Vec<usize>,
}

impl Owners {
    /// The cut of `chunks` over `ranks` owners; `final_kernel[i]` is the kernel after
    /// which chunk i is final (all equal: the cut is by size alone).
    pub fn new(chunks: &[ParamChunk], final_kernel: &[usize], ranks: usize) -> Owners {
        Owners::of_some(chunks, final_kernel, ranks, |_| true)
    }

    /// [`Owners::new`] of the chunks `dealt(i)` only (a pipeline stage's replicas own
    /// the chunks their stage finishes); the others have no owner.
    pub fn of_some(
        chunks: &[ParamChunk],
        final_kernel: &[usize],
        ranks: usize,
        dealt: impl Fn(usize) -> bool,
    ) -> Owners {
        let kernel = |i: usize| final_kernel.get(i).copied().unwrap_or(0);
        // The largest chunks first (each to the least-loaded owner: pieces within one
        // small chunk of each other), chunks of one size in finishing order: dealt round
        // the owners, so each holds its share of what every kernel finishes.
        let mut order: Vec<usize> = (0..chunks.len()).filter(|&i| dealt(i)).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(chunks[i].len), kernel(i), i));
        let mut owned = vec![Vec::new(); ranks];
        let mut floats = vec![0usize; ranks];
        for i in order {
            let s = (0..ranks)
                .min_by_key(|&s| (floats[s], s))
                .expect("ranks ≥ 1");
            floats[s] += chunks[i].len;
            owned[s].push(i);
        }
        // Each piece in finishing order, so its parts are runs of it.
        let mut local = vec![0usize; chunks.len()];
        for list in &mut owned {
            list.sort_by_key(|&i| (kernel(i), i));
            let mut at = 0;
            for &i in list.iter() {
                local[i] = at;
                at += chunks[i].len;
            }
        }
        let parts = (owned.iter())
            .map(|list| {
                let len: usize = list.iter().map(|&i| chunks[i].len).sum();
                let least = MIN_PART.max(len.div_ceil(MAX_PARTS));
                let mut parts: Vec<Part> = Vec::new();
                for (j, &i) in list.iter().enumerate() {
                    let end = local[i] + chunks[i].len;
                    match parts.last_mut() {
                        Some(p) if p.floats.len() < least || p.kernel == kernel(i) => {
                            p.kernel = p.kernel.max(kernel(i));
                            p.chunks.end = j + 1;
                            p.floats.end = end;
                        }
                        _ => parts.push(Part {
                            kernel: kernel(i),
                            chunks: j..j + 1,
                            floats: local[i]..end,
                        }),
                    }
                }
                parts
            })
            .collect();
        let parts: Vec<Vec<Part>> = parts;
        let first_part = (parts.iter())
            .scan(0, |at, p| {
                *at += p.len();
                Some(*at - p.len())
            })
            .collect();
        Owners {
            chunks: owned,
            local,
            parts,
            first_part,
        }
    }

    /// Floats of owner `s`'s piece.
    pub fn len(&self, s: usize, chunks: &[ParamChunk]) -> usize {
        self.chunks[s].iter().map(|&i| chunks[i].len).sum()
    }

    /// Floats of the longest piece: the length of every piece the exchange moves.
    pub fn piece(&self, chunks: &[ParamChunk]) -> usize {
        (0..self.chunks.len())
            .map(|s| self.len(s, chunks))
            .max()
            .unwrap_or(0)
    }

    /// Every part of every owner as (kernel, owner, part index), in the order backward
    /// finishes them (ties by owner, then part): the order every rank sends in.
    pub fn sending_order(&self) -> Vec<(usize, usize, usize)> {
        let mut order: Vec<(usize, usize, usize)> = (self.parts.iter().enumerate())
            .flat_map(|(s, parts)| (parts.iter().enumerate()).map(move |(j, p)| (p.kernel, s, j)))
            .collect();
        order.sort();
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_hold_balanced_shares_of_every_finishing_kernel() {
        // Chunks of a model: a few large, many small; backward finishes them from the
        // end (kernel 9 - i / 2), the first two (the "embeddings") last.
        let lens = [32768, 32768, 100, 7, 32768, 5000, 64, 64, 32768, 12000];
        let mut offset = 0;
        let chunks: Vec<ParamChunk> = (lens.iter())
            .map(|&len| {
                let c = ParamChunk {
                    offset,
                    len,
                    decay: true,
                };
                offset += len;
                c
            })
            .collect();
        let finals: Vec<usize> = (0..lens.len()).map(|i| 9 - i / 2).collect();
        for ranks in [1, 2, 3, 4, 8, 16] {
            let owners = Owners::new(&chunks, &finals, ranks);
            assert_eq!(owners.chunks.len(), ranks);
            // Every chunk owned once; pieces packed without gaps.
            let mut flat: Vec<usize> = owners.chunks.iter().flatten().copied().collect();
            flat.sort();
            assert_eq!(flat, (0..chunks.len()).collect::<Vec<_>>(), "{ranks} ranks");
            for (s, list) in owners.chunks.iter().enumerate() {
                let mut at = 0;
                for &i in list {
                    assert_eq!(owners.local[i], at);
                    at += chunks[i].len;
                }
                // The parts tile the piece, each final no earlier than its chunks.
                let parts = &owners.parts[s];
                let tiled: Vec<usize> = (parts.iter()).flat_map(|p| p.chunks.clone()).collect();
                assert_eq!(tiled, (0..list.len()).collect::<Vec<_>>());
                for p in parts {
                    for &i in &list[p.chunks.clone()] {
                        assert!(finals[i] <= p.kernel);
                    }
                }
            }
            // No piece exceeds its share by more than one chunk.
            let largest = owners.piece(&chunks);
            assert!(
                largest <= offset / ranks + 32768,
                "{ranks} ranks: {largest}"
            );
        }
        // A piece of very many chunks, each finished by its own kernel: parts stay few
        // enough to be MPI tags (a part's index), and at least MIN_PART long.
        let many: Vec<ParamChunk> = (0..100_000)
            .map(|i| ParamChunk {
                offset: i * 32768,
                len: 32768,
                decay: true,
            })
            .collect();
        let kernels: Vec<usize> = (0..many.len()).collect();
        let one = Owners::new(&many, &kernels, 1);
        assert!(one.parts[0].len() <= MAX_PARTS && one.parts[0].len() < 32767);
        assert!(
            one.parts[0]
                .iter()
                .rev()
                .skip(1)
                .all(|p| p.floats.len() >= MIN_PART)
        );
        // The two chunks finished last go to two owners, not one.
        let two = Owners::new(&chunks, &finals, 2);
        assert_ne!(
            (0..2).find(|&s| two.chunks[s].contains(&0)),
            (0..2).find(|&s| two.chunks[s].contains(&1)),
        );
    }
}

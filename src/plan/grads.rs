//! Where a process's shard gradients live and when they are added: the fixed tree of
//! the gradient sum, scheduled so that a process holds O(workers × log₂ shards)
//! gradient buffers instead of one per shard, with the same additions as the tree.
//!
//! The step's gradient is the sum of the S shard gradients in a fixed binary tree over
//! shard indices (`kernels/src/shard_sum.rs`): node (x, l) covers shards
//! [x, min(x + 2ˡ, S)) and is its left child (x, l − 1) plus its right child
//! (x + 2ˡ⁻¹, l − 1) when that exists, else the left child unchanged. Each node's value
//! depends only on its children's, so the tree may be added in any order that adds
//! each node's two children once both exist:
//!
//! - worker w runs a contiguous block of shards in order and keeps a stack of finished
//!   nodes; a finished shard is pushed, and while the two nodes on top are siblings,
//!   the left one += the right one (its buffer is free again) — a binary counter, so
//!   the stack holds at most ~2 log₂ S nodes (those whose sibling is in another
//!   worker's block wait at its bottom);
//! - when every worker is done, the workers' stacks, in block order, go through the
//!   same stack once more: the tree above the blocks.
//!
//! Every addition is one `sum += addend` of two buffers ([`Merge`]), a `ShardGradSum`
//! of two (IEEE addition commutes, so which child holds the result changes no bit) —
//! except that a worker keeps the shards of an aligned group of [`GROUP`] (a whole
//! subtree inside its block) apart until the group is done and adds them in one
//! `ShardGradSum` of [`GROUP`], whose fixed tree is the subtree's: each addition reads
//! two buffers and writes one, so pairwise additions alone move 3(S − 1) buffers
//! where the group's pass moves GROUP + 1 for GROUP − 1 additions, for a few more
//! buffers held. The root lands in buffer 0, the buffer of the block's first shard.
//!
//! Over R ranks, each rank finishes the tree above the ranks' blocks on its own
//! parameter chunks (`owners.rs`, `machine/ranks.rs`).

use std::ops::Range;

/// Additions of the tree: buffer `sum` += buffer `addends[0]` (a pair), or `sum` and
/// the `addends` as the leaves of an aligned subtree of [`GROUP`] shards, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merge {
    pub sum: usize,
    pub addends: Vec<usize>,
}

/// Shards a worker adds in one pass when an aligned group of them lies in its block.
pub const GROUP: usize = 4;

/// One worker's part: its shards, the buffer each accumulates into, and the additions
/// to make after each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerGrads {
    pub shards: Range<usize>,
    /// `buffer[j]`: the buffer shard `shards.start + j` accumulates into (zeroed first).
    pub buffer: Vec<usize>,
    /// `after[j]`: the additions, in order, once shard `shards.start + j` is done.
    pub after: Vec<Vec<Merge>>,
}

/// How a process sums the gradients of its block of shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GradSchedule {
    /// Gradient buffers (one parameter count each) the process holds.
    pub buffers: usize,
    pub workers: Vec<WorkerGrads>,
    /// The additions once every worker is done, in order (the tree above the blocks).
    pub last: Vec<Merge>,
}

/// The buffer holding a block's sum at the end.
pub const ROOT: usize = 0;

/// The schedule for the shards `block` of a step of `shards`, run by up to `workers`
/// workers (each takes a contiguous part, the first ones one shard more when they do
/// not divide evenly). `block` must be a whole subtree (or all shards) for the root
/// to be its sum: see `machine/ranks.rs`.
pub fn schedule(shards: usize, block: Range<usize>, workers: usize) -> GradSchedule {
    let workers = workers.clamp(1, block.len().max(1));
    let (base, extra) = (block.len() / workers, block.len() % workers);
    let mut buffers = 0;
    let mut start = block.start;
    let mut stacks: Vec<Vec<Node>> = Vec::new();
    let parts = (0..workers)
        .map(|w| {
            let mine = start..start + base + usize::from(w < extra);
            start = mine.end;
            // The largest group, up to GROUP, that this worker's block can hold.
            let group = GROUP.min(1 << mine.len().max(1).ilog2());
            let (mut stack, mut free) = (Vec::new(), Vec::new());
            let mut part = WorkerGrads {
                shards: mine.clone(),
                buffer: Vec::new(),
                after: Vec::new(),
            };
            for s in mine.clone() {
                let buffer = free.pop().unwrap_or_else(|| {
                    buffers += 1;
                    buffers - 1
                });
                part.buffer.push(buffer);
                let first = s - s % group;
                let grouped =
                    group > 2 && first >= mine.start && first + group <= mine.end.min(shards);
                let merges = match grouped {
                    // A shard of a group that is not done yet: kept apart.
                    true if s + 1 < first + group => {
                        stack.push(Node(s..s + 1, buffer));
                        Vec::new()
                    }
                    // The group's last shard: the group in one pass, then pairwise on.
                    true => {
                        let leaves = stack.split_off(stack.len() + 1 - group);
                        let addends: Vec<usize> = (leaves.iter().skip(1).map(|n| n.1))
                            .chain([buffer])
                            .collect();
                        let sum = leaves[0].1;
                        let node = Node(first..s + 1, sum);
                        let mut merges = vec![Merge { sum, addends }];
                        merges.extend(push(&mut stack, node, shards));
                        merges
                    }
                    false => push(&mut stack, Node(s..s + 1, buffer), shards),
                };
                free.extend(merges.iter().flat_map(|m| m.addends.iter().copied()));
                part.after.push(merges);
            }
            stacks.push(stack);
            part
        })
        .collect();
    let mut stack = Vec::new();
    let mut last = Vec::new();
    for node in stacks.into_iter().flatten() {
        last.extend(push(&mut stack, node, shards));
    }
    debug_assert!(
        block.is_empty() || stack.len() == 1,
        "{block:?} is not a subtree"
    );
    GradSchedule {
        buffers,
        workers: parts,
        last,
    }
}

/// The gradient buffers [`schedule`] holds for a single process's step.
pub fn buffer_count(shards: usize, workers: usize) -> usize {
    schedule(shards, 0..shards, workers).buffers
}

/// A finished node of the tree: its shards and the buffer holding their sum.
#[derive(Clone, Debug)]
struct Node(Range<usize>, usize);

/// Pushes `node` and adds the top two nodes while they are siblings in the tree over
/// `shards`; returns the additions made.
fn push(stack: &mut Vec<Node>, node: Node, shards: usize) -> Vec<Merge> {
    stack.push(node);
    let mut merges = Vec::new();
    while let [.., left, right] = stack.as_slice() {
        if !siblings(&left.0, &right.0, shards) {
            break;
        }
        merges.push(Merge {
            sum: left.1,
            addends: vec![right.1],
        });
        let right = stack.pop().expect("two nodes");
        stack.last_mut().expect("two nodes").0.end = right.0.end;
    }
    merges
}

/// Whether `left` and `right` are the two children of one node of the tree over
/// `shards`: `left` = (x, l) with x a multiple of 2ˡ⁺¹, `right` = (x + 2ˡ, l), whose
/// shards end at the next multiple of 2ˡ⁺¹ or at the last shard.
fn siblings(left: &Range<usize>, right: &Range<usize>, shards: usize) -> bool {
    let size = left.len();
    size.is_power_of_two()
        && left.end == right.start
        && left.start.is_multiple_of(2 * size)
        && right.end == (right.start + size).min(shards)
}

#[cfg(test)]
mod tests {
    use super::{GradSchedule, Merge, ROOT, schedule};

    /// The fixed tree of `kernels/src/shard_sum.rs`, on f32 values.
    fn tree(values: &[f32]) -> f32 {
        let mut v = values.to_vec();
        let mut stride = 1;
        while stride < v.len() {
            let mut s = 0;
            while s + stride < v.len() {
                v[s] += v[s + stride];
                s += 2 * stride;
            }
            stride *= 2;
        }
        v[0]
    }

    /// Runs `plan` on one float per shard, as the machine runs it on buffers.
    fn run(plan: &GradSchedule, values: &[f32]) -> f32 {
        let mut buffers = vec![f32::NAN; plan.buffers];
        for part in &plan.workers {
            for (j, s) in part.shards.clone().enumerate() {
                buffers[part.buffer[j]] = values[s];
                for m in &part.after[j] {
                    add(&mut buffers, m);
                }
            }
        }
        for m in &plan.last {
            add(&mut buffers, m);
        }
        buffers[ROOT]
    }

    /// One merge: a pair, or a group's leaves through the tree.
    fn add(buffers: &mut [f32], m: &Merge) {
        let mut leaves = vec![buffers[m.sum]];
        leaves.extend(m.addends.iter().map(|&a| buffers[a]));
        assert!(leaves.len() == 2 || leaves.len() == super::GROUP);
        buffers[m.sum] = tree(&leaves);
    }

    #[test]
    fn every_split_adds_the_trees_bits_in_few_buffers() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Magnitudes over 2⁻²⁰…2²⁰, both signs: rounding differs between orders.
            let m = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            m * 2f32.powi((seed % 41) as i32 - 20)
        };
        for shards in 1..=70 {
            let values: Vec<f32> = (0..shards).map(|_| next()).collect();
            let expected = tree(&values);
            for workers in [1, 2, 3, 5, 8, 16, 64, 128] {
                let plan = schedule(shards, 0..shards, workers);
                let got = run(&plan, &values);
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "{shards} shards, {workers} workers"
                );
                let used = workers.min(shards);
                let log = usize::BITS - shards.leading_zeros();
                assert!(
                    plan.buffers <= used * (2 * log as usize + 1),
                    "{shards} shards, {workers} workers: {} buffers",
                    plan.buffers
                );
                let additions: usize = (plan.workers.iter())
                    .flat_map(|p| p.after.iter().flatten())
                    .chain(&plan.last)
                    .map(|m| m.addends.len())
                    .sum();
                assert_eq!(additions, shards - 1, "one addition per inner node");
            }
        }
    }

    #[test]
    fn a_power_of_two_block_is_a_subtree() {
        // Rank 2 of 4 over 16 shards: shards 8..12, two workers.
        let values: Vec<f32> = (0..16).map(|i| 1.0 / (i as f32 + 3.0)).collect();
        let plan = schedule(16, 8..12, 2);
        assert_eq!(plan.buffers, 4);
        assert_eq!(run(&plan, &values), tree(&values[8..12]));
        // One worker over 64 shards holds a group and one buffer per level above it,
        // not 64; a group of 4 is one addition of four buffers.
        assert_eq!(schedule(64, 0..64, 1).buffers, 8);
        assert_eq!(schedule(64, 0..64, 2).buffers, 14);
        let plan = schedule(8, 0..8, 2);
        assert_eq!(
            plan.buffers, 8,
            "two groups of 4 (no saving at 8 shards on 2)"
        );
        assert_eq!(plan.workers[0].after[3][0].addends, [1, 2, 3]);
        assert_eq!(
            plan.last,
            [Merge {
                sum: 0,
                addends: vec![4]
            }]
        );
    }
}

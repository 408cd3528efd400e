//! The static memory plan: liveness of every arena tensor over the kernel order, and
//! an offset for each so that tensors whose lifetimes overlap never share bytes.
//! Greedy best-fit, largest first; the report compares the peak with the lower bound
//! (the most bytes simultaneously live) and the naive sum of every buffer.

use serde::Serialize;

use super::Plan;
use crate::graph::{Role, TensorId};

/// Offsets are multiples of 16 floats (64 bytes, a cache line).
const ALIGN: usize = 16;

/// Where a tensor lives in the arena and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// Offset in floats.
    pub offset: usize,
    /// Length in floats.
    pub len: usize,
    /// First kernel that writes it.
    pub first: usize,
    /// Last kernel that reads or writes it.
    pub last: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArenaStats {
    /// Arena size: the highest byte any slot reaches.
    pub peak_bytes: u64,
    /// The most bytes live at once: no allocation can do better.
    pub lower_bound_bytes: u64,
    /// Every arena tensor in its own buffer.
    pub naive_bytes: u64,
}

/// Lowers every kernel to the kernel IR; recomputes costs, first writers, lifetimes, offsets and the arena's statistics.
pub fn allocate(plan: &mut Plan) {
    let graph = &plan.graph;
    let mut lifetimes: Vec<Option<(usize, usize)>> = vec![None; graph.tensors.len()];
    let mut first_writes: Vec<Vec<TensorId>> = vec![Vec::new(); plan.kernels.len()];
    for (k, kernel) in plan.kernels.iter().enumerate() {
        for op in &kernel.ops {
            for &id in op.outputs.iter() {
                let t = graph.tensor(id);
                if !matches!(t.role, Role::Activation | Role::Saved | Role::Grad) {
                    continue;
                }
                match &mut lifetimes[id.0] {
                    None => {
                        lifetimes[id.0] = Some((k, k));
                        if t.role == Role::Grad {
                            first_writes[k].push(id);
                        }
                    }
                    Some((_, last)) => *last = k,
                }
            }
            for &id in op.inputs.iter() {
                if let Some((_, last)) = &mut lifetimes[id.0] {
                    *last = (*last).max(k);
                }
            }
        }
    }
    for (kernel, zero) in plan.kernels.iter_mut().zip(first_writes) {
        kernel.steps = super::ir::lower(graph, &kernel.ops, &plan.attention_blocks);
        let (flops, bytes) = super::cost::kernel_cost(graph, &kernel.steps);
        kernel.flops = flops;
        kernel.bytes = bytes;
        kernel.zero_first = zero;
    }

    // Largest first; among equals, earliest first (a stable, deterministic order).
    let mut order: Vec<usize> = (0..lifetimes.len())
        .filter(|&i| lifetimes[i].is_some())
        .collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(graph.tensors[i].len()),
            lifetimes[i].unwrap().0,
            i,
        )
    });
    let mut slots: Vec<Option<Slot>> = vec![None; graph.tensors.len()];
    // Placed slots sorted by (offset, end): walking them in that order and skipping
    // those whose lifetimes miss the new tensor's gives the busy ranges in the order
    // best-fit scans them, with no per-tensor filtering into a new list and sort (which
    // made planning quadratic with a large constant: 28 s at 1 000 layers).
    let mut placed: Vec<Slot> = Vec::new();
    for i in order {
        let (first, last) = lifetimes[i].expect("filtered");
        let len = graph.tensors[i].len();
        let busy = placed
            .iter()
            .filter(|s| s.first <= last && first <= s.last)
            .map(|s| (s.offset, s.offset + s.len));
        let offset = best_fit(busy, len);
        let slot = Slot {
            offset,
            len,
            first,
            last,
        };
        let at = placed.partition_point(|s| (s.offset, s.offset + s.len) <= (offset, offset + len));
        placed.insert(at, slot);
        slots[i] = Some(slot);
    }

    let peak = placed.iter().map(|s| s.offset + s.len).max().unwrap_or(0);
    // The most floats live at once: a sweep over lifetime ends (a slot is live from
    // its first kernel through its last).
    let mut events: Vec<(usize, isize)> = placed
        .iter()
        .flat_map(|s| [(s.first, s.len as isize), (s.last + 1, -(s.len as isize))])
        .collect();
    events.sort_unstable_by_key(|&(k, delta)| (k, delta));
    let (mut live, mut lower_bound) = (0isize, 0isize);
    for (_, delta) in events {
        live += delta;
        lower_bound = lower_bound.max(live);
    }
    let lower_bound = lower_bound as usize;
    plan.arena = ArenaStats {
        peak_bytes: 4 * peak as u64,
        lower_bound_bytes: 4 * lower_bound as u64,
        naive_bytes: 4 * placed.iter().map(|s| s.len as u64).sum::<u64>(),
    };
    plan.slots = slots;
}

/// The lowest aligned offset of the smallest gap between `busy` ranges (sorted by
/// start) that holds `len` floats, or the first offset above them all.
fn best_fit(busy: impl IntoIterator<Item = (usize, usize)>, len: usize) -> usize {
    let align = |x: usize| x.div_ceil(ALIGN) * ALIGN;
    let mut best: Option<(usize, usize)> = None; // (gap size, offset)
    let mut cursor = 0;
    for (start, end) in busy {
        let at = align(cursor);
        if start >= at + len {
            let gap = start - at;
            if best.is_none_or(|(size, _)| gap < size) {
                best = Some((gap, at));
            }
        }
        cursor = cursor.max(end);
    }
    best.map_or(align(cursor), |(_, offset)| offset)
}

#[cfg(test)]
mod tests {
    use super::best_fit;

    #[test]
    fn best_fit_takes_the_smallest_gap_that_holds() {
        // gaps: [16, 48) = 32 floats, [96, 112) = 16 floats, then 160..
        let busy = [(0, 16), (48, 96), (112, 160)];
        assert_eq!(best_fit(busy, 16), 96);
        assert_eq!(best_fit(busy, 20), 16);
        assert_eq!(best_fit(busy, 40), 160);
        assert_eq!(best_fit([], 5), 0);
    }
}

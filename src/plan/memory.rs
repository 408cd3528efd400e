//! The static memory plan: liveness of every arena tensor over the kernel order, and
//! an offset for each so that tensors whose lifetimes overlap never share bytes.
//! Placement is `placement.rs`; the report compares the peak with the lower bound
//! (the most bytes simultaneously live) and the naive sum of every buffer.

use serde::Serialize;

use super::{BYTES_PER_FLOAT, Plan};
use crate::graph::{Role, TensorId};

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

/// The memory plan of a kernel order: who zeroes each activation gradient first, every
/// arena tensor's slot, and the arena's statistics.
pub struct Layout {
    /// Per kernel, the activation gradients it writes first (zeroed just before it).
    pub zero_first: Vec<Vec<TensorId>>,
    pub slots: Vec<Option<Slot>>,
    pub arena: ArenaStats,
}

/// The allocate pass: reads the kernels' ops; writes each kernel's `zero_first`,
/// `plan.slots` and `plan.arena`.
pub fn allocate(mut plan: Plan) -> Plan {
    let Layout {
        zero_first,
        slots,
        arena,
    } = layout(&plan);
    for (kernel, zero) in plan.kernels.iter_mut().zip(zero_first) {
        kernel.zero_first = zero;
    }
    super::ir::mark_stored_input_grads(&mut plan);
    plan.slots = slots;
    plan.arena = arena;
    plan.passes.push("allocate");
    plan
}

/// Lifetimes of every arena tensor over the kernel order (from the kernels' ops), and
/// an offset for each (`placement.rs`). Pure: the recompute pass measures candidate
/// plans with it.
pub fn layout(plan: &Plan) -> Layout {
    let graph = &plan.graph;
    let mut lifetimes: Vec<Option<(usize, usize)>> = vec![None; graph.tensors.len()];
    let mut first_writes: Vec<Vec<TensorId>> = vec![Vec::new(); plan.kernels.len()];
    for (k, kernel) in plan.kernels.iter().enumerate() {
        for op in &kernel.ops {
            for &id in op.outputs.iter() {
                if !plan.in_arena(id) {
                    continue;
                }
                let t = graph.tensor(id);
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

    let live: Vec<usize> = (0..lifetimes.len())
        .filter(|&i| lifetimes[i].is_some())
        .collect();
    let mut slots: Vec<Option<Slot>> = vec![None; graph.tensors.len()];
    let placed = super::placement::place(live.iter().map(|&i| {
        let (first, last) = lifetimes[i].expect("filtered");
        (graph.tensors[i].len(), first, last)
    }));
    for (&i, &slot) in live.iter().zip(&placed) {
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
    Layout {
        zero_first: first_writes,
        slots,
        arena: ArenaStats {
            peak_bytes: BYTES_PER_FLOAT * peak as u64,
            lower_bound_bytes: BYTES_PER_FLOAT * lower_bound as u64,
            naive_bytes: BYTES_PER_FLOAT * placed.iter().map(|s| s.len as u64).sum::<u64>(),
        },
    }
}

//! Where a tensor's floats are, and the raw pointers the workers and kernels share.

/// Where a tensor's floats are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Region {
    Arena,
    Params,
    Grads,
    Tokens,
    Targets,
    Mask,
    /// The weights' bf16 panels (`plan/panels.rs`).
    Panels,
}

/// A tensor's region, offset and length (in elements).
#[derive(Clone, Copy, Debug)]
pub(super) struct Place {
    pub region: Region,
    pub offset: usize,
    pub len: usize,
}

/// A raw base pointer that may cross threads: each user touches a part no other
/// thread touches at the same time (said at every use).
pub(super) struct SyncPtr<T>(pub *mut T);

// SAFETY: see the type's contract; the pointee buffers outlive every use.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// # Safety
    /// No one else may access these `len` elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, len: usize) -> &mut [T] {
        // SAFETY: forwarded to the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0, len) }
    }
}

/// A kernel's argument table: the base pointer of each of its tensors.
pub(super) struct Table(pub Vec<*mut u8>);

// SAFETY: a table is only read; the kernels it is passed to write through it only to
// memory that the caller has to itself (a worker's arena, a shard's or chunk's part).
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

/// The parts of a gradient buffer of `len` floats that a shard's first pass of a step
/// needs zeroed: all but the weight gradients stored by their products in that pass
/// (`Step::MatmulBackward`'s `stores_dweight`), in ascending order. Those stored
/// gradients are most of a model's (every linear layer's weight): bench-s zeroed 41 MiB
/// a shard, then its products read it back to add to it.
pub(super) fn first_pass_zeroes(
    plan: &crate::plan::Plan,
    places: &[Place],
    len: usize,
) -> Vec<std::ops::Range<usize>> {
    use cllm_kernels::ir::Step;
    let mut stored: Vec<std::ops::Range<usize>> = (plan.kernels.iter())
        .flat_map(|k| &k.steps)
        .filter_map(|step| match step {
            Step::MatmulBackward {
                dweight,
                stores_dweight: true,
                ..
            } => {
                let place = places[dweight.0];
                debug_assert_eq!(place.region, Region::Grads);
                Some(place.offset..place.offset + place.len)
            }
            _ => None,
        })
        .collect();
    stored.sort_by_key(|r| r.start);
    let mut zeroes = Vec::new();
    let mut at = 0;
    for r in stored {
        if r.start > at {
            zeroes.push(at..r.start);
        }
        at = at.max(r.end);
    }
    if at < len {
        zeroes.push(at..len);
    }
    zeroes
}

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

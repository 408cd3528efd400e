//! The machine's large buffers (parameters, moments, gradient buffers, bf16 panels,
//! arenas): zeroed, and offered to the kernel's 2 MiB pages.
//!
//! A step streams hundreds of megabytes through these buffers (bench-s: eight 41 MiB
//! gradient buffers, two arenas of activations); with 4 KiB pages every 4 KiB of a
//! stream or of a strided walk (the weight gradients' transposed operand steps 6 KiB
//! a row) costs a TLB entry. Where transparent huge pages are left to `madvise` (the
//! common default), a buffer that does not ask never gets them.

use cllm_kernels::Real;

/// Buffers smaller than this are not advised: they hold less than two huge pages.
const ADVISE_FROM: usize = 4 << 20;

/// `len` zeroed values, the kernel asked to back them with huge pages.
pub(super) fn zeroed<T: Real>(len: usize) -> Vec<T> {
    let buffer = vec![T::default(); len];
    advise_huge_pages(
        buffer.as_ptr().cast(),
        std::mem::size_of_val(buffer.as_slice()),
    );
    buffer
}

/// Asks for huge pages over the whole 4 KiB pages of `bytes` bytes at `start`: advice
/// only, so a kernel without transparent huge pages (or another OS) changes nothing.
/// A buffer this large is usually a fresh mapping from `calloc`, untouched, so its
/// first touches fault in 2 MiB pages wherever a whole aligned 2 MiB lies inside it;
/// pages already touched (a buffer the allocator reused) keep their 4 KiB.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn advise_huge_pages(start: *const u8, bytes: usize) {
    if bytes < ADVISE_FROM {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let (from, to) = (
            (start as usize).next_multiple_of(PAGE),
            (start as usize + bytes) / PAGE * PAGE,
        );
        // SAFETY: the range lies inside this live allocation; MADV_HUGEPAGE changes
        // neither its contents nor its mapping, only how later faults are served.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

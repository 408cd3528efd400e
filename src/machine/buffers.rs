//! The machine's large buffers (parameters, moments, gradient buffers, bf16 panels,
//! arenas): zeroed, starting on a cache line, and offered to the kernel's 2 MiB pages.
//!
//! A step streams hundreds of megabytes through these buffers (bench-s: eight 41 MiB
//! gradient buffers, two arenas of activations); with 4 KiB pages every 4 KiB of a
//! stream or of a strided walk (the weight gradients' transposed operand steps 6 KiB
//! a row) costs a TLB entry. Where transparent huge pages are left to `madvise` (the
//! common default), a buffer that does not ask never gets them.
//!
//! They start on a 64-byte line (a large one on a 2 MiB page): a `Vec` this large is a
//! fresh mapping from `calloc`, whose data start 16 bytes past a page, so every 64-byte
//! vector the kernels load or store from a line-aligned offset of a tensor (the arena's
//! slots, the weights and their gradients) straddled two lines.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use cllm_kernels::Real;

/// Buffers smaller than this are not advised: they hold less than two huge pages.
const ADVISE_FROM: usize = 4 << 20;

/// Alignment of every buffer's first element: a cache line.
const LINE: usize = 64;

/// A huge page, where large buffers start.
const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed values from a cache line (a 2 MiB page when large), the kernel asked
/// to back them with huge pages. Derefs to a slice, like the `Vec` it replaces.
pub(super) struct Buffer<T: Real> {
    ptr: NonNull<T>,
    len: usize,
    /// What to give back: the mapping (start, bytes) or the allocation's layout.
    origin: Origin,
}

enum Origin {
    Empty,
    Heap(std::alloc::Layout),
    #[cfg(target_os = "linux")]
    Mapping(*mut libc::c_void, usize),
}

// SAFETY: a `Buffer` owns its memory like a `Vec<T>`.
unsafe impl<T: Real> Send for Buffer<T> {}
unsafe impl<T: Real> Sync for Buffer<T> {}

/// `len` zeroed values (see [`Buffer`]).
pub(super) fn zeroed<T: Real>(len: usize) -> Buffer<T> {
    Buffer::zeroed(len)
}

impl<T: Real> Buffer<T> {
    /// `len` zeroed values (every `Real` is zero with all bits clear).
    pub fn zeroed(len: usize) -> Buffer<T> {
        let bytes = (len.checked_mul(std::mem::size_of::<T>()))
            .unwrap_or_else(|| panic!("a buffer of {len} values is past the address space"));
        if bytes == 0 {
            let origin = Origin::Empty;
            // A dangling pointer (never read through) that is still on a line.
            return Buffer {
                ptr: NonNull::new(std::ptr::without_provenance_mut(LINE)).expect("not null"),
                len,
                origin,
            };
        }
        #[cfg(target_os = "linux")]
        if bytes >= ADVISE_FROM {
            return Buffer::mapped(len, bytes);
        }
        let layout = std::alloc::Layout::from_size_align(bytes, LINE)
            .unwrap_or_else(|_| panic!("a buffer of {bytes} bytes"));
        // SAFETY: the layout has a nonzero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<T>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        let origin = Origin::Heap(layout);
        Buffer { ptr, len, origin }
    }

    /// A fresh anonymous mapping (zero pages, faulted in on first touch), the data from
    /// its first whole 2 MiB page, advised to huge pages before anything touches it.
    #[cfg(target_os = "linux")]
    fn mapped(len: usize, bytes: usize) -> Buffer<T> {
        let span = bytes.saturating_add(HUGE_PAGE);
        // SAFETY: an anonymous private mapping of `span` bytes; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let layout = std::alloc::Layout::from_size_align(span, HUGE_PAGE)
                .unwrap_or(std::alloc::Layout::new::<u8>());
            std::alloc::handle_alloc_error(layout)
        }
        let start = (base as usize).next_multiple_of(HUGE_PAGE);
        let end = (start + bytes).next_multiple_of(4096);
        // SAFETY: [start, end) lies inside the mapping; the advice changes neither its
        // contents nor its mapping, only how its first touches are served.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        Buffer {
            ptr: NonNull::new(start as *mut T).expect("a mapping is not at address 0"),
            len,
            origin: Origin::Mapping(base, span),
        }
    }
}

impl<T: Real> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` zero-initialised values live at `ptr` while `self` does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Real> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Real> Default for Buffer<T> {
    fn default() -> Buffer<T> {
        Buffer::zeroed(0)
    }
}

impl<T: Real> Drop for Buffer<T> {
    fn drop(&mut self) {
        match self.origin {
            Origin::Empty => {}
            // SAFETY: allocated with this layout by `zeroed`.
            Origin::Heap(layout) => unsafe {
                std::alloc::dealloc(self.ptr.as_ptr().cast(), layout)
            },
            #[cfg(target_os = "linux")]
            // SAFETY: mapped with these bounds by `mapped`; no slice of it outlives `self`.
            Origin::Mapping(base, span) => unsafe {
                libc::munmap(base, span);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size starts on a line (a large one on a huge page), reads zero, and holds
    /// what is written to its last value (a `Vec`'s data began 16 bytes past a page).
    #[test]
    fn zeroed_buffers_start_on_a_line() {
        for len in [
            0,
            1,
            15,
            17,
            1000,
            (ADVISE_FROM / 4) - 1,
            ADVISE_FROM / 4 + 5,
        ] {
            let mut b: Buffer<f32> = zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % LINE, 0, "{len} floats");
            if len * 4 >= ADVISE_FROM {
                assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0, "{len} floats");
            }
            assert!(b.iter().all(|x| *x == 0.0));
            if let Some(last) = b.last_mut() {
                *last = 3.0;
            }
            assert_eq!(b.iter().sum::<f32>(), if len > 0 { 3.0 } else { 0.0 });
        }
        let d: Buffer<f64> = Buffer::default();
        assert!(d.is_empty());
    }
}

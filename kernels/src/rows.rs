//! The row kernels' work split over the caller's spare threads.
//!
//! When a worker has more threads than shards (GPT-2 small with one sequence on a
//! many-core server), its GEMMs and attention heads already split over the spare
//! threads ([`crate::gemm::sgemm::set_gemm_threads`]); the native row passes —
//! LayerNorm, GELU, residual, embedding, softmax + cross-entropy and their backward —
//! split here too, so that no kernel of the step runs on one core while the others
//! wait.
//!
//! Why the bits do not change: a part is a contiguous range of rows (or, for a sum
//! over rows such as LayerNorm's weight gradient, of columns), and each row (column)
//! is computed by exactly the code that computes it unsplit, in the same order. No
//! sum ever crosses a part boundary, so the split — which depends on the thread
//! count — decides only which core computes an element, never its value.

use std::ops::Range;

/// Fewest elements worth a part of their own: below this a rayon fork costs about as
/// much as the work it moves (~1 µs).
pub const GRAIN: usize = 4096;

/// The parts `count` items of `width` elements each are split into on this thread: the
/// caller's GEMM threads, but no part smaller than [`GRAIN`] elements.
pub fn parts(count: usize, width: usize) -> usize {
    parts_on(crate::gemm::sgemm::gemm_threads(), count, width)
}

/// The parts `count` items of `width` elements each are split into on `threads`
/// threads (what [`parts`] returns on a thread given that many; the planner's
/// prediction asks it too).
pub fn parts_on(threads: usize, count: usize, width: usize) -> usize {
    let most = (count * width.max(1)) / GRAIN;
    threads.min(most).min(count).max(1)
}

/// Part `p`'s range of `count` items cut into `parts` contiguous parts.
pub fn part(count: usize, parts: usize, p: usize) -> Range<usize> {
    count * p / parts..count * (p + 1) / parts
}

/// Calls `work(range)` for contiguous ranges covering `0..count` (items of `width`
/// elements), in parallel over the caller's GEMM threads when there is enough work.
pub fn for_each_part(count: usize, width: usize, work: impl Fn(Range<usize>) + Sync + Send) {
    let n = parts(count, width);
    if n == 1 {
        work(0..count);
    } else {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(|p| work(part(count, n, p)));
    }
}

/// A base pointer shared by the parts of one kernel call, each of which touches only
/// its own range of what it points at.
#[derive(Clone, Copy)]
pub struct Shared<T>(pub *mut T);

// SAFETY: the parts of a call read shared inputs and write disjoint ranges (see the
// callers); the call returns only after every part has finished.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub fn of(p: *const T) -> Self {
        Shared(p as *mut T)
    }

    /// The address of element `i` (a method, so that closures capture the whole
    /// `Shared`, which is `Sync`, rather than its raw pointer, which is not).
    pub fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }

    /// The elements `range` of the buffer, to write.
    ///
    /// # Safety
    /// In range of the buffer, and no other part holds these elements meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }

    /// The elements `range` of the buffer, to read.
    ///
    /// # Safety
    /// In range of the buffer, and no part writes these elements meanwhile.
    pub unsafe fn slice(&self, range: Range<usize>) -> &[T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.0.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_item_once_in_order() {
        for count in [0, 1, 2, 7, 100, 1023] {
            for parts in 1..=9 {
                let mut next = 0;
                for p in 0..parts {
                    let r = part(count, parts, p);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, count);
            }
        }
    }

    #[test]
    fn small_work_stays_on_one_thread() {
        crate::gemm::sgemm::set_gemm_threads(8);
        assert_eq!(parts(10, 10), 1);
        assert_eq!(parts(1024, 768), 8);
        assert_eq!(parts(3, 1 << 20), 3);
        crate::gemm::sgemm::set_gemm_threads(1);
        assert_eq!(parts(1024, 768), 1);
    }
}

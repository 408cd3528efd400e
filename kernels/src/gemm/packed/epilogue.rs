//! The epilogue ([`crate::gemm::epilogue`]) applied to a tile of C while it is still
//! in L1, right after the micro-kernel's last store to it (the last block of k): no
//! second pass over the output.
//!
//! The math is the JIT's, operation for operation ([`crate::gelu::gelu_f32`],
//! [`crate::gelu::gelu_grad_f32`]), written as scalar Rust that the compiler
//! vectorises at the width of the calling micro-kernel's target features (`apply` is
//! inlined into an AVX-512 and an AVX2 wrapper).

use super::Tile;
use crate::gelu::{gelu_f32 as gelu, gelu_grad_f32 as gelu_grad};
pub use crate::gemm::epilogue::Epilogue;

/// Asks for the lines of the epilogue's own matrices that `tile` will touch (GELU's
/// output; GELU's input and its gradient), so they arrive while the micro-kernel's
/// FMAs of the last k block run: the epilogue reads and writes them tile by tile, an
/// order the hardware prefetcher does not follow (without this GELU's backward
/// measured 40% slower in the epilogue than as its own streaming pass).
///
/// Into L1 ([`INTO_L1`]) for the fp32 tiles (12 rows); into L2 ([`INTO_L2`]) for the
/// bf16 32 × 32 tiles, whose B panel (up to 32 KiB) streams through L1 four times while
/// the tile runs: 16 KiB of GELU rows asked into L1 at the tile's start pushed the
/// panel's lines out (on Zen 4 the fused GELU families ran 11–13% faster from L2).
#[inline(always)]
pub(super) fn prefetch<const HINT: i32>(tile: Tile, epilogue: Epilogue) {
    let (pre, dpre) = epilogue.gelu_backward;
    let matrices = [epilogue.gelu as *const f32, pre, dpre as *const f32];
    for m in matrices.into_iter().filter(|m| !m.is_null()) {
        for i in 0..tile.rows {
            let offset = (tile.row + i) as isize * tile.dst.rs + tile.col as isize;
            let row = m.wrapping_offset(offset) as *const i8;
            super::prefetch_lines_into::<HINT>(row, 4 * tile.cols);
        }
    }
}

/// [`prefetch`] into L1.
pub(super) const INTO_L1: i32 = std::arch::x86_64::_MM_HINT_T0;
/// [`prefetch`] into L2.
pub(super) const INTO_L2: i32 = std::arch::x86_64::_MM_HINT_T1;

/// Lanes of one chunk: a whole number of vectors at either width, so the compiler
/// vectorises each chunk's loop completely (left to itself it vectorised only rows of
/// 64 floats and ran a tile's 32 through the scalar remainder).
const CHUNK: usize = 16;

/// Applies `epilogue` to `tile` (whose columns must be contiguous in dst).
///
/// # Safety
/// The tile lies inside dst; `bias` holds dst's columns, `gelu` has dst's layout.
#[inline(always)]
pub(super) unsafe fn apply(tile: Tile, epilogue: Epilogue) {
    debug_assert_eq!(tile.dst.cs, 1);
    let (bias, gelu_out) = (epilogue.bias, epilogue.gelu);
    let (pre, dpre) = epilogue.gelu_backward;
    for i in 0..tile.rows {
        let offset = (tile.row + i) as isize * tile.dst.rs + tile.col as isize;
        let row = (tile.dst.ptr as *mut f32).wrapping_offset(offset);
        let activated = gelu_out.wrapping_offset(offset);
        let (pre_row, dpre_row) = (pre.wrapping_offset(offset), dpre.wrapping_offset(offset));
        let whole = tile.cols / CHUNK * CHUNK;
        // SAFETY (both loops): the tile's columns of row i are inside dst; the bias
        // holds dst's columns, gelu, pre and dpre have dst's layout.
        for start in (0..whole).step_by(CHUNK) {
            // Whole chunks go through fixed-size arrays: vector loads and stores, no
            // memcpy (a copy of run-time length is a call, and a stall after it).
            unsafe {
                let at = row.add(start);
                let mut x = at.cast::<[f32; CHUNK]>().read_unaligned();
                if !bias.is_null() {
                    let b = bias
                        .add(tile.col + start)
                        .cast::<[f32; CHUNK]>()
                        .read_unaligned();
                    for j in 0..CHUNK {
                        x[j] += b[j];
                    }
                    at.cast::<[f32; CHUNK]>().write_unaligned(x);
                }
                if !gelu_out.is_null() {
                    let mut y = [0.0f32; CHUNK];
                    for j in 0..CHUNK {
                        y[j] = gelu(x[j]);
                    }
                    activated
                        .add(start)
                        .cast::<[f32; CHUNK]>()
                        .write_unaligned(y);
                }
                if !dpre.is_null() {
                    let v = pre_row.add(start).cast::<[f32; CHUNK]>().read_unaligned();
                    let d_at = dpre_row.add(start).cast::<[f32; CHUNK]>();
                    let mut d = match epilogue.stores_dpre {
                        true => [0.0; CHUNK],
                        false => d_at.read_unaligned(),
                    };
                    for j in 0..CHUNK {
                        d[j] = x[j].mul_add(gelu_grad(v[j]), d[j]);
                    }
                    d_at.write_unaligned(d);
                }
            }
        }
        for j in whole..tile.cols {
            let at = offset + j as isize;
            // SAFETY: as above.
            unsafe {
                *row.add(j) =
                    crate::gemm::epilogue::element(&epilogue, *row.add(j), tile.col + j, at)
            };
        }
    }
}

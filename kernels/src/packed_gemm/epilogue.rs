//! Epilogues applied to a tile of C while it is still in L1, right after the
//! micro-kernel's last store to it (the last block of k): `C += bias` (a row vector)
//! and `G = gelu(C)` into a second matrix of C's layout. This is the fused
//! `matmul_bias_gelu` forward: no second pass over the output.
//!
//! The math is the JIT's, operation for operation ([`crate::gelu::gelu_f32`]), written
//! as scalar Rust that the compiler vectorises at the width of the calling
//! micro-kernel's target features (`apply` is inlined into an AVX-512 and an AVX2
//! wrapper).

use super::Tile;
use crate::gelu::gelu_f32 as gelu;

/// What to do to a finished tile. Null pointers mean "not this part".
#[derive(Clone, Copy)]
pub struct Epilogue {
    /// A row vector added to every row of C (indexed by C's column).
    pub bias: *const f32,
    /// Where `gelu(C)` goes: a matrix with C's strides.
    pub gelu: *mut f32,
}

// SAFETY: addresses only; `gemm`'s contract says who writes where (threads of one
// call finish disjoint tiles).
unsafe impl Send for Epilogue {}
unsafe impl Sync for Epilogue {}

impl Epilogue {
    pub const NONE: Epilogue = Epilogue {
        bias: std::ptr::null(),
        gelu: std::ptr::null_mut(),
    };

    pub fn is_none(&self) -> bool {
        self.bias.is_null() && self.gelu.is_null()
    }
}

/// Applies `epilogue` to `tile` (whose columns must be contiguous in dst).
///
/// # Safety
/// The tile lies inside dst; `bias` holds dst's columns, `gelu` has dst's layout.
#[inline(always)]
pub(super) unsafe fn apply(tile: Tile, epilogue: Epilogue) {
    debug_assert_eq!(tile.dst.cs, 1);
    for i in 0..tile.rows {
        let offset = (tile.row + i) as isize * tile.dst.rs + tile.col as isize;
        // SAFETY: row i of the tile, `cols` floats, inside dst (and so inside gelu).
        unsafe {
            let row = std::slice::from_raw_parts_mut(
                (tile.dst.ptr as *mut f32).offset(offset),
                tile.cols,
            );
            if !epilogue.bias.is_null() {
                let bias = std::slice::from_raw_parts(epilogue.bias.add(tile.col), tile.cols);
                for (x, b) in row.iter_mut().zip(bias) {
                    *x += *b;
                }
            }
            if !epilogue.gelu.is_null() {
                let out = std::slice::from_raw_parts_mut(epilogue.gelu.offset(offset), tile.cols);
                for (y, x) in out.iter_mut().zip(row.iter()) {
                    *y = gelu(*x);
                }
            }
        }
    }
}

//! What happens to a product's output after its last block of k: `C += bias` (a row
//! vector), `G = gelu(C)` into a second matrix of C's layout (the fused forward of a
//! linear layer and its GELU), and `dpre += C ⊙ gelu'(pre)` (the GELU's backward
//! fused into the product that computes its output's gradient; or `=`, where dpre is
//! first written there). The native GEMM
//! applies it to each tile while the tile is in L1 (`packed/epilogue.rs`); on CPUs
//! without it, [`pass`] runs it as a second pass over the output. Either way the math
//! is the JIT's, operation for operation.

use crate::gelu::{gelu_f32, gelu_grad_f32};

/// What to do to a finished output. Null pointers mean "not this part".
#[derive(Clone, Copy)]
pub struct Epilogue {
    /// A row vector added to every row of C (indexed by C's column).
    pub bias: *const f32,
    /// Where `gelu(C)` goes: a matrix with C's strides.
    pub gelu: *mut f32,
    /// `(pre, dpre)`: `dpre += C ⊙ gelu'(pre)`, both matrices with C's strides.
    pub gelu_backward: (*const f32, *mut f32),
    /// `dpre = C ⊙ gelu'(pre) + 0` instead (the same rounding as added to zeros):
    /// dpre is first written here, so neither zeroed before nor read.
    pub stores_dpre: bool,
}

// SAFETY: addresses only; the GEMM's contract says who writes where (threads of one
// call finish disjoint tiles).
unsafe impl Send for Epilogue {}
unsafe impl Sync for Epilogue {}

impl Epilogue {
    pub const NONE: Epilogue = Epilogue {
        bias: std::ptr::null(),
        gelu: std::ptr::null_mut(),
        gelu_backward: (std::ptr::null(), std::ptr::null_mut()),
        stores_dpre: false,
    };

    pub fn is_none(&self) -> bool {
        self.bias.is_null() && self.gelu.is_null() && self.gelu_backward.1.is_null()
    }

    /// The epilogue of the product's rows from `row` on (`rs`: C's row stride): the
    /// matrices with C's strides move down with it, the bias (a row vector) does not.
    pub fn from_row(self, row: isize, rs: isize) -> Epilogue {
        let down = |p: *mut f32| match p.is_null() {
            true => p,
            false => p.wrapping_offset(row * rs),
        };
        Epilogue {
            bias: self.bias,
            gelu: down(self.gelu),
            gelu_backward: (
                down(self.gelu_backward.0 as *mut f32),
                down(self.gelu_backward.1),
            ),
            stores_dpre: self.stores_dpre,
        }
    }
}

/// One element of the epilogue: `x` is C's value at (i, j), at offset `at` of C's
/// layout; returns C's new value (bias added) after writing GELU's parts.
///
/// # Safety
/// `at` is inside every matrix the epilogue names; `bias` holds column `j`.
#[inline(always)]
pub(crate) unsafe fn element(epilogue: &Epilogue, x: f32, j: usize, at: isize) -> f32 {
    // SAFETY: the caller's contract.
    unsafe {
        let x = if epilogue.bias.is_null() {
            x
        } else {
            x + *epilogue.bias.add(j)
        };
        if !epilogue.gelu.is_null() {
            *epilogue.gelu.offset(at) = gelu_f32(x);
        }
        let (pre, dpre) = epilogue.gelu_backward;
        if !dpre.is_null() {
            let d = dpre.offset(at);
            let before = if epilogue.stores_dpre { 0.0 } else { *d };
            *d = x.mul_add(gelu_grad_f32(*pre.offset(at)), before);
        }
        x
    }
}

/// The epilogue as a second pass over dst (m × n at strides (rs, cs)).
///
/// # Safety
/// dst and the epilogue's matrices hold m × n at these strides, the bias n floats.
pub(crate) unsafe fn pass(
    m: usize,
    n: usize,
    (dst, rs, cs): (*const f32, isize, isize),
    epilogue: Epilogue,
) {
    if epilogue.is_none() {
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let at = i as isize * rs + j as isize * cs;
            // SAFETY: inside dst and the epilogue's matrices.
            unsafe {
                let x = (dst as *mut f32).offset(at);
                *x = element(&epilogue, *x, j, at);
            }
        }
    }
}

//! Operands packed once and multiplied many times: the panels of [`super::pack`] laid
//! out for a whole matrix (A: MR-tall panels, each `depth` deep; B: NR-wide panels,
//! each `depth` deep), and the micro-kernel loop over them with no packing inside.
//!
//! A tiled kernel that multiplies the same operand by many small tiles (attention: a
//! head's keys and values against every query block) packs it once here instead of
//! once per product. The arithmetic is [`super::gemm`]'s exactly: the same
//! micro-kernel over the same KC blocks of k, the same add-or-store per block, so a
//! product gives the same bits either way.
//!
//! For bf16 products on a matrix unit, the same idea on the units' own panels
//! ([`super::amx_pack`]: 32-row A and 32-column VNNI-2 B panels, k in steps of 32,
//! rounded while packed): [`pack_a_bf16`], [`pack_b_bf16`], [`multiply_bf16`].

use super::amx_pack::{self, STEP_ELEMS};
use super::{Epilogue, MicroKernel, Tile, View, avx2, avx512, pack};
use crate::cpu::{Bf16Unit, Isa};

/// Packed panels of one operand: panel `i` (rows `i·MR..` of A, or columns `i·NR..`
/// of B) starts at `ptr + i·MR·depth` (or `i·NR·depth`), and holds for each p from 0 to
/// `depth` MR (NR) consecutive floats. A product reads its k from `from` on.
#[derive(Clone, Copy)]
pub struct Panels {
    pub ptr: *const f32,
    pub depth: usize,
    pub from: usize,
}

/// Floats the panels of an `m × k` A take with `isa`'s micro-kernel.
pub fn a_len(isa: Isa, m: usize, k: usize) -> usize {
    m.next_multiple_of(mr(isa)) * k
}

/// Floats the panels of a `k × n` B take with `isa`'s micro-kernel.
pub fn b_len(isa: Isa, k: usize, n: usize) -> usize {
    n.next_multiple_of(super::tile_columns(isa)) * k
}

/// Rows of `isa`'s micro-tile.
pub fn mr(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => avx512::Kernel::MR,
        _ => avx2::Kernel::MR,
    }
}

/// Packs all of `lhs` (m × k) into A panels of depth k.
///
/// # Safety
/// `isa` is Avx2 or Avx512 and supported by this CPU; `lhs` is a valid m × k matrix;
/// `buf` holds [`a_len`] floats.
pub unsafe fn pack_a(isa: Isa, buf: &mut [f32], lhs: View, m: usize, k: usize) {
    // SAFETY: forwarded.
    unsafe {
        match isa {
            Isa::Avx512 => pack::pack_a::<avx512::Kernel>(buf, lhs, 0, m, 0, k),
            _ => pack::pack_a::<avx2::Kernel>(buf, lhs, 0, m, 0, k),
        }
    }
}

/// Packs all of `rhs` (k × n) into B panels of depth k.
///
/// # Safety
/// As [`pack_a`], with `rhs` a valid k × n matrix and `buf` of [`b_len`] floats.
pub unsafe fn pack_b(isa: Isa, buf: &mut [f32], rhs: View, k: usize, n: usize) {
    // SAFETY: forwarded.
    unsafe {
        match isa {
            Isa::Avx512 => pack::pack_b::<avx512::Kernel>(buf, rhs, 0, k, 0, n),
            _ => pack::pack_b::<avx2::Kernel>(buf, rhs, 0, k, 0, n),
        }
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + a[m×k]·b[k×n]` from packed panels, on this
/// thread.
///
/// # Safety
/// As [`pack_a`]; `a` holds the panels of m rows and `b` of n columns, each reaching
/// `from + k` deep; `dst` is a writable m × n matrix overlapping neither.
pub unsafe fn multiply(
    isa: Isa,
    [m, n, k]: [usize; 3],
    dst: View,
    a: Panels,
    b: Panels,
    accumulate: bool,
) {
    // SAFETY: forwarded.
    unsafe {
        match isa {
            Isa::Avx512 => panel_loops::<avx512::Kernel>([m, n, k], dst, a, b, accumulate),
            _ => panel_loops::<avx2::Kernel>([m, n, k], dst, a, b, accumulate),
        }
    }
}

/// The micro-kernel over every tile, k in KC blocks (as [`super::gemm`] cuts it).
unsafe fn panel_loops<K: MicroKernel>(
    [m, n, k]: [usize; 3],
    dst: View,
    a: Panels,
    b: Panels,
    accumulate: bool,
) {
    let mut pc = 0;
    while pc < k || (k == 0 && pc == 0) {
        let kc = K::KC.min(k - pc);
        for jr in (0..n).step_by(K::NR) {
            // SAFETY: the caller's contract covers every panel read and tile stored.
            let b_panel = unsafe { b.ptr.add(jr * b.depth + (b.from + pc) * K::NR) };
            for ir in (0..m).step_by(K::MR) {
                let a_panel = View {
                    // SAFETY: as above.
                    ptr: unsafe { a.ptr.add(ir * a.depth + (a.from + pc) * K::MR) },
                    rs: 1,
                    cs: K::MR as isize,
                };
                let tile = Tile {
                    dst,
                    row: ir,
                    col: jr,
                    rows: K::MR.min(m - ir),
                    cols: K::NR.min(n - jr),
                    add: accumulate || pc > 0,
                };
                // SAFETY: as above.
                unsafe { K::tile(kc, a_panel, b_panel, tile) };
            }
        }
        if k == 0 {
            break;
        }
        pc += kc;
    }
}

/// Rows (columns) of a bf16 panel and k of one of its steps.
pub const BF16_TILE: usize = 32;

/// bf16 elements the whole panels of an `m × k` A (or a `k × m` B) take.
pub fn bf16_len(m: usize, k: usize) -> usize {
    m.next_multiple_of(BF16_TILE) * k.next_multiple_of(BF16_TILE)
}

/// bf16 panels of one operand: panel `i` (rows, or columns, `32i..`) starts at
/// `ptr + i·steps·STEP_ELEMS` and holds `steps` steps of 32 k; a product reads from
/// step `from / 32` on (`from` a multiple of 32).
#[derive(Clone, Copy)]
pub struct Bf16Panels {
    pub ptr: *const u16,
    pub steps: usize,
    pub from: usize,
}

/// Packs all of `lhs` (m × k) into bf16 A panels (rounded; rows and k past the matrix
/// zero).
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16; `lhs` is a valid m × k matrix; `buf` holds [`bf16_len`]`(m, k)`.
pub unsafe fn pack_a_bf16(buf: &mut [u16], lhs: View, m: usize, k: usize) {
    // SAFETY: forwarded.
    unsafe { amx_pack::pack_a(buf, lhs, 0, m, 0, k) }
}

/// Packs all of `rhs` (k × n) into bf16 VNNI-2 B panels (rounded; columns and k past
/// the matrix zero).
///
/// # Safety
/// As [`pack_a_bf16`], with `rhs` a valid k × n matrix and `buf` of [`bf16_len`]`(n, k)`.
pub unsafe fn pack_b_bf16(buf: &mut [u16], rhs: View, k: usize, n: usize) {
    // SAFETY: forwarded.
    unsafe { amx_pack::pack_b(buf, rhs, 0, k, 0, n) }
}

/// `dst[m×n] = (accumulate ? dst : 0) + a[m×k]·b[k×n]` from bf16 panels on `unit`
/// (AMX or AVX512-BF16), on this thread: each 32 × 32 tile in one call of the
/// micro-tile over all of its k (the sums stay in the tile; the bits do not depend on
/// how k would be blocked).
///
/// # Safety
/// `unit` is in [`crate::cpu::bf16_supported`] and not emulated; `a` and `b` hold the
/// panels of m rows and n columns, each reaching `from + k` (rounded up to 32) deep,
/// zero past the matrices; `dst` is a writable m × n matrix overlapping neither.
pub unsafe fn multiply_bf16(
    unit: Bf16Unit,
    [m, n, k]: [usize; 3],
    dst: View,
    a: Bf16Panels,
    b: Bf16Panels,
    accumulate: bool,
) {
    debug_assert!(a.from.is_multiple_of(BF16_TILE) && b.from.is_multiple_of(BF16_TILE));
    let micro = super::amx::micro_tiles(unit);
    let steps = k.div_ceil(BF16_TILE);
    let start = |p: Bf16Panels, i: usize| {
        p.ptr
            .wrapping_add((i / BF16_TILE * p.steps + p.from / BF16_TILE) * STEP_ELEMS)
    };
    let tiles = m.div_ceil(BF16_TILE);
    for jr in (0..n).step_by(BF16_TILE) {
        let next = (jr + BF16_TILE < n).then(|| start(b, jr + BF16_TILE));
        for ir in (0..m).step_by(BF16_TILE) {
            if let Some(next) = next {
                amx_pack::prefetch_share(next, steps, ir / BF16_TILE, tiles);
            }
            let tile = Tile {
                dst,
                row: ir,
                col: jr,
                rows: BF16_TILE.min(m - ir),
                cols: BF16_TILE.min(n - jr),
                add: accumulate,
            };
            // SAFETY: the caller's contract covers every panel step read and tile stored.
            unsafe { micro(steps, start(a, ir), start(b, jr), tile, Epilogue::NONE) };
        }
    }
}

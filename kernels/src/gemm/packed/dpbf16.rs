//! The AVX512-BF16 micro-tile: VDPBF16PS (`_mm512_dpbf16_ps`, two bf16 products
//! added into each fp32 lane) on the AMX GEMM's own packed panels ([`super::amx_pack`]),
//! so the two units share the packing and the loops of [`super::amx`] and differ only
//! in this function.
//!
//! A 32 × 32 tile runs as four blocks of 8 rows × 32 columns: 16 zmm accumulators; per
//! pair of k, two loads of B (one tile row of each B tile: 16 columns × one pair) and
//! eight broadcasts of an A pair (32 bits of an A tile row), sixteen VDPBF16PS. Each
//! lane sums its pairs in k order, so the bits do not depend on the thread split. The
//! bias is added to each block as it is stored; GELU and its gradient run over the
//! finished tile.

use std::arch::x86_64::*;

use super::amx_pack::STEP_ELEMS;
use super::{Epilogue, MicroKernel, Tile, avx512};

/// Rows of one block of the tile.
const ROWS: usize = 8;

/// `tile (+)= a · b` over `steps` steps of 32 k, `a` and `b` packed as for AMX, then
/// `epilogue` ([`super::amx::MicroTile`]).
///
/// # Safety
/// The CPU has AVX512-BF16; `a` and `b` hold `steps` steps of a 32-row and a 32-column
/// panel; the tile lies inside its destination, whose columns are contiguous unless
/// `epilogue` is [`Epilogue::NONE`].
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn micro_tile(
    steps: usize,
    a: *const u16,
    b: *const u16,
    tile: Tile,
    epilogue: Epilogue,
) {
    // The bias is added as each block is stored (the bias epilogue's addition, made
    // before the store: no second pass over C's rows, the same bits); GELU and its
    // gradient run over the finished tile after it.
    let bias = match epilogue.bias.is_null() {
        true => std::ptr::null(),
        false => epilogue.bias.wrapping_add(tile.col),
    };
    let rest = Epilogue {
        bias: std::ptr::null(),
        ..epilogue
    };
    if !rest.is_none() {
        super::epilogue::prefetch::<{ super::epilogue::INTO_L2 }>(tile, rest);
    }
    for block in 0..tile.rows.div_ceil(ROWS) {
        let r0 = block * ROWS;
        // A rows r0.. live in tile r0 / 16, rows of 32 bf16 (64 bytes).
        let a_rows = a.wrapping_add((r0 / 16) * 512 + (r0 % 16) * 32);
        let part = Tile {
            row: tile.row + r0,
            rows: ROWS.min(tile.rows - r0),
            ..tile
        };
        // The block's rows of C are read (when adding) and written after its k loop:
        // ask for their lines (128 bytes a row, three lines when unaligned) while the
        // products run, as the fp32 kernel does. The weight gradients add into
        // matrices larger than L2, and the first row's load stalled the store.
        if tile.dst.cs == 1 {
            for i in 0..part.rows {
                // SAFETY: the row is inside dst (and a prefetch never faults).
                let row = unsafe { tile.dst.at(part.row + i, tile.col) } as *const i8;
                super::prefetch_lines(row, 4 * part.cols);
            }
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for s in 0..steps {
            let (a_step, b_step) = (
                a_rows.wrapping_add(s * STEP_ELEMS),
                b.wrapping_add(s * STEP_ELEMS),
            );
            for q in 0..16 {
                // SAFETY: inside the panels (the caller's contract).
                unsafe {
                    let b0 = _mm512_loadu_si512(b_step.add(q * 32).cast());
                    let b1 = _mm512_loadu_si512(b_step.add(512 + q * 32).cast());
                    let (b0, b1) = (bh(b0), bh(b1));
                    for (i, row) in acc.iter_mut().enumerate() {
                        let pair = a_step.add(i * 32 + 2 * q).cast::<i32>().read_unaligned();
                        let ai = bh(_mm512_set1_epi32(pair));
                        row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                        row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
                    }
                }
            }
        }
        // SAFETY: the block lies inside the tile.
        unsafe {
            match part.rows {
                8 => avx512::store(&acc, part, bias),
                rows => {
                    // A ragged last block: the rows past the tile are not stored.
                    for (i, row) in acc.iter().enumerate().take(rows) {
                        let one = Tile {
                            row: part.row + i,
                            rows: 1,
                            ..part
                        };
                        avx512::store::<1>(std::array::from_ref(row), one, bias);
                    }
                }
            }
        }
    }
    if !rest.is_none() {
        // SAFETY: the tile is finished and inside dst (the caller's contract).
        unsafe { avx512::Kernel::epilogue(tile, rest) };
    }
}

/// 32 bf16 held as 16 i32s, as the bf16 vector type.
#[inline(always)]
fn bh(x: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte vector registers; every bit pattern is a valid value.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

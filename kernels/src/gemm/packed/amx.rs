//! The bf16 GEMM on Intel's AMX tiles: `C (+)= A·B` with both operands rounded to bf16
//! (nearest, ties to even: `crate::bf16`) while they are packed, the products summed in
//! fp32 by TDPBF16PS.
//!
//! A micro-tile is 32 × 32 fp32: a 2 × 2 block of 16 × 16 accumulator tiles (tmm0–3),
//! fed per 32 of k by two A tiles (tmm4–5: 16 rows × 32 bf16) and two B tiles (tmm6–7:
//! 16 pairs of k × 16 columns, each pair interleaved — "VNNI-2"), four TDPBF16PS. Eight
//! tiles of 16 rows × 64 bytes: one tile configuration, loaded at the start of every
//! call on the calling thread. k is zero-padded to a multiple of 32 and rows and columns
//! to 32 in the packed panels (a padding that is not zero would leak into the sums).
//!
//! The loops are BLIS's, as in the fp32 GEMM ([`super`]): columns in NC blocks (each
//! thread its own range), k in KC blocks (in order, so each element sums its k blocks
//! in the same order on any thread count), rows in MC blocks; one B panel (KC × 32)
//! stays in L1 while the A panels stream from L2.
//!
//! AMX instructions are not in Rust's stable intrinsics (1.95), so they are
//! `core::arch::asm!`. The kernel must first ask Linux for the tile data state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`): [`crate::cpu::amx_permitted`] does, once.

use std::arch::asm;
use std::cell::RefCell;

use super::amx_pack::{STEP_ELEMS, pack_a, pack_b, panel_step, prefetch_share};
use super::{Epilogue, Line, MicroKernel, Tile, View, avx512};
use crate::cpu::Bf16Unit;

/// Rows and columns of a micro-tile.
const TILE: usize = 32;
/// k of one step of the micro-kernel (one A tile row holds 32 bf16).
const KSTEP: usize = 32;
/// Depth of a packed block (a B panel of KC × 32 bf16 = 32 KiB stays in L1).
const KC: usize = 512;
/// Rows of a packed A block (MC × KC bf16 = 256 KiB, in L2).
const MC: usize = 256;
/// Columns of a packed B block (KC × NC bf16 = 1 MiB, in L2/L3).
const NC: usize = 1024;

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

thread_local! {
    /// This thread's packed blocks of A and B (bf16), grown once to the blocking.
    static PACKS: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A buffer of lines as bf16 bits.
fn halves(lines: &mut [Line]) -> &mut [u16] {
    // SAFETY: `Line` is 64 bytes with no padding.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 32) }
}

/// `dst[m×n] = (accumulate ? dst : 0) + bf16(lhs)[m×k]·bf16(rhs)[k×n]` over columns
/// `cols` of dst and rhs, then the epilogue on each finished tile; the 32 × 32 tiles
/// run on `unit`: AMX, or AVX512-BF16 ([`super::dpbf16`]) on the same packed panels.
/// Unless `panels` is null it holds rhs's whole panels ([`super::pack_panels`]), read
/// in place: rhs itself is not read.
///
/// # Safety
/// `unit` is AMX or AVX512-BF16 and in [`crate::cpu::bf16_supported`]; `panels` is
/// null or holds rhs packed; the views
/// describe valid f32 matrices of these shapes,
/// `dst` writable and overlapping neither input; an epilogue needs dst's columns
/// contiguous.
pub(super) unsafe fn gemm(
    unit: Bf16Unit,
    m: usize,
    k: usize,
    cols: std::ops::Range<usize>,
    dst: View,
    (lhs, rhs, panels): (View, View, *const u16),
    accumulate: bool,
    epilogue: Epilogue,
) {
    assert!(
        panels.is_null() || cols.start.is_multiple_of(TILE),
        "a packed B is read from a panel's first column"
    );
    let micro = micro_tiles(unit);
    PACKS.with(|packs| {
        let mut packs = packs.borrow_mut();
        let (a_lines, b_lines) = &mut *packs;
        let (a_need, b_need) = ((MC * KC).div_ceil(32), (KC * NC).div_ceil(32));
        if a_lines.len() < a_need {
            a_lines.resize(a_need, Line([0.0; 16]));
        }
        if b_lines.len() < b_need {
            b_lines.resize(b_need, Line([0.0; 16]));
        }
        let (a_pack, b_pack) = (halves(a_lines), halves(b_lines));
        let mut jc = cols.start;
        let block = columns_per_block(k, !panels.is_null());
        while jc < cols.end {
            let nc = block.min(cols.end - jc);
            let mut pc = 0;
            while pc < k || (k == 0 && pc == 0) {
                let kc = KC.min(k - pc);
                let steps = kc.div_ceil(KSTEP);
                // SAFETY: the caller's contract covers every element packed or stored.
                unsafe {
                    if panels.is_null() {
                        pack_b(b_pack, rhs, pc, kc, jc, nc);
                    }
                    let mut ic = 0;
                    while ic < m {
                        let mc = MC.min(m - ic);
                        pack_a(a_pack, lhs, ic, mc, pc, kc);
                        let last = pc + kc >= k;
                        let b_at = |jr: usize| match panels.is_null() {
                            true => b_pack.as_ptr().add(jr / TILE * steps * STEP_ELEMS),
                            false => panels.add(panel_step(k, jc + jr, pc)),
                        };
                        let tiles = mc.div_ceil(TILE);
                        for jr in (0..nc).step_by(TILE) {
                            let b = b_at(jr);
                            let next = (jr + TILE < nc).then(|| b_at(jr + TILE));
                            for ir in (0..mc).step_by(TILE) {
                                if let Some(next) = next {
                                    prefetch_share(next, steps, ir / TILE, tiles);
                                }
                                let a = a_pack.as_ptr().add(ir / TILE * steps * STEP_ELEMS);
                                let tile = Tile {
                                    dst,
                                    row: ic + ir,
                                    col: jc + jr,
                                    rows: TILE.min(mc - ir),
                                    cols: TILE.min(nc - jr),
                                    add: accumulate || pc > 0,
                                };
                                // After the last block of k the micro-tile applies
                                // the epilogue.
                                let finish = if last { epilogue } else { Epilogue::NONE };
                                micro(steps, a, b, tile, finish);
                            }
                        }
                        ic += mc;
                    }
                }
                if k == 0 {
                    break;
                }
                pc += kc;
            }
            jc += nc;
        }
    });
}

/// Columns of one block of B (the `jc` loop): every column when B's panels are packed
/// ahead (nothing of B is packed in the call, and each further block would pack A
/// again: 14% of a bench-s step's A packing was such repeats), else as many as fill
/// the KC × NC bf16 of a packed block at this product's depth (a weight gradient's
/// k = 256 takes 2 048 columns, all of a 1 536-wide product in one block).
fn columns_per_block(k: usize, packed_ahead: bool) -> usize {
    match packed_ahead {
        true => usize::MAX,
        false => {
            let depth = KC.min(k).next_multiple_of(KSTEP).max(KSTEP);
            (KC * NC / depth) / TILE * TILE
        }
    }
}

/// A 32 × 32 micro-tile: `tile (+)= a · b` over `steps` steps of 32 k from packed
/// panels, then `epilogue` on the finished tile (nothing for [`Epilogue::NONE`]; any
/// other needs C's columns contiguous).
pub(super) type MicroTile = unsafe fn(usize, *const u16, *const u16, Tile, Epilogue);

/// The 32 × 32 micro-tile of `unit`, ready to run on this thread (for AMX: the tile
/// configuration loaded).
///
/// # Panics
/// If `unit` is the emulated one, or AMX and the process may not use it.
pub(super) fn micro_tiles(unit: Bf16Unit) -> MicroTile {
    match unit {
        Bf16Unit::Amx => {
            assert!(
                crate::cpu::amx_permitted(),
                "AMX is not available to this process"
            );
            // SAFETY: AMX is permitted; the configuration is valid.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
            micro_tile
        }
        Bf16Unit::Avx512Bf16 => super::dpbf16::micro_tile,
        Bf16Unit::Emulated => panic!("the emulated unit runs the fp32 micro-kernels"),
    }
}

/// One 32 × 32 tile: `tile (+)= a · b` over `steps` steps of 32 k. A whole tile of a
/// destination with contiguous columns is loaded and stored in place; any other
/// (ragged, strided) goes through a local 32 × 32 buffer.
unsafe fn micro_tile(steps: usize, a: *const u16, b: *const u16, tile: Tile, epilogue: Epilogue) {
    if !epilogue.is_none() {
        // The epilogue's own rows arrive during the products (as in the fp32 loops:
        // without it the fused GELU epilogues cost 4× their fp32 time here).
        super::epilogue::prefetch::<{ super::epilogue::INTO_L2 }>(tile, epilogue);
    }
    let direct = tile.dst.cs == 1 && tile.rows == TILE && tile.cols == TILE;
    // Only a tile that is not stored in place needs the (zeroed) buffer: 4 KiB of
    // zeroing per tile measured 14% of a product.
    let mut local = std::mem::MaybeUninit::<[Line; 2 * TILE]>::uninit();
    let (c, stride) = if direct {
        // SAFETY: the tile is inside dst.
        let c = unsafe { tile.dst.at(tile.row, tile.col) } as *mut f32;
        (c, tile.dst.rs * 4)
    } else {
        let c = local.as_mut_ptr().cast::<f32>();
        // SAFETY: the buffer holds TILE × TILE floats.
        unsafe { std::ptr::write_bytes(c, 0, TILE * TILE) };
        if tile.add {
            for i in 0..tile.rows {
                for j in 0..tile.cols {
                    // SAFETY: inside dst and the buffer.
                    unsafe { *c.add(i * TILE + j) = *tile.dst.at(tile.row + i, tile.col + j) };
                }
            }
        }
        (c, (TILE * 4) as isize)
    };
    let c16 = c.wrapping_offset(16 * stride / 4);
    // SAFETY: c and c16 address 16 rows of 64 + 64 bytes at `stride`; a and b hold
    // `steps` steps of two 1 KiB tiles each; the tiles are configured.
    unsafe {
        if tile.add || !direct {
            asm!(
                "tileloadd tmm0, [{c} + {s}*1]",
                "tileloadd tmm1, [{c} + {s}*1 + 64]",
                "tileloadd tmm2, [{c16} + {s}*1]",
                "tileloadd tmm3, [{c16} + {s}*1 + 64]",
                c = in(reg) c, c16 = in(reg) c16, s = in(reg) stride,
                options(nostack, readonly),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        if steps > 0 {
            asm!(
                // Each product issues as soon as its two tiles are loaded.
                "2:",
                "tileloadd tmm4, [{a} + {s64}*1]",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s64}*1 + 1024]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 2048",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a => _, b = inout(reg) b => _, n = inout(reg) steps => _,
                s64 = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c} + {s}*1], tmm0",
            "tilestored [{c} + {s}*1 + 64], tmm1",
            "tilestored [{c16} + {s}*1], tmm2",
            "tilestored [{c16} + {s}*1 + 64], tmm3",
            c = in(reg) c, c16 = in(reg) c16, s = in(reg) stride,
            options(nostack),
        );
    }
    if !direct {
        let c = local.as_ptr().cast::<f32>();
        for i in 0..tile.rows {
            for j in 0..tile.cols {
                // SAFETY: inside dst and the buffer.
                unsafe {
                    *(tile.dst.at(tile.row + i, tile.col + j) as *mut f32) = *c.add(i * TILE + j)
                };
            }
        }
    }
    if !epilogue.is_none() {
        // SAFETY: the tile is finished and inside dst (the caller's contract).
        unsafe { avx512::Kernel::epilogue(tile, epilogue) };
    }
}

/// TDPBF16PS's throughput on this core: `iterations` × four independent TDPBF16PS
/// (16 × 16 × 32 multiply-adds each) on zero tiles; returns the FLOPs done. The bf16
/// matrix peak `cllm bench` and the GEMM bench report against.
///
/// # Panics
/// If [`crate::cpu::amx_permitted`] is false.
pub fn peak_loop(iterations: u64) -> f64 {
    assert!(
        crate::cpu::amx_permitted(),
        "AMX is not available to this process"
    );
    let zeros = [Line([0.0; 16]); 16];
    // SAFETY: AMX is permitted; the configuration is valid; the loads read 16 rows of
    // 64 bytes of `zeros`.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tileloadd tmm4, [{z} + {s}*1]",
            "tileloadd tmm5, [{z} + {s}*1]",
            "tileloadd tmm6, [{z} + {s}*1]",
            "tileloadd tmm7, [{z} + {s}*1]",
            "2:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            z = in(reg) zeros.as_ptr(), s = in(reg) 64usize,
            n = inout(reg) iterations.max(1) => _,
            options(nostack, readonly),
        );
    }
    iterations.max(1) as f64 * 4.0 * (16 * 16 * 32 * 2) as f64
}

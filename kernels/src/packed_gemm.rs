//! The native GEMM: `C (+)= A·B` with 256-bit AVX2 + FMA micro-kernels, packing into
//! per-thread buffers that are allocated once (the first call on a thread), so a
//! training step allocates nothing. The layout is BLIS's:
//!
//! ```text
//! for jc in columns, NC at a time          B block (KC × NC) packed into NR-wide panels (L3)
//!   for pc in depth, KC at a time          (in order: each C element sums its k blocks in order)
//!     pack B[pc.., jc..]
//!     for ic in rows, MC at a time         A block (MC × KC) packed into MR-tall panels (L2)
//!       (pack A[ic.., pc..] unless it can be read in place)
//!       for each NR panel, each MR panel:  6 × 16 micro-kernel, 12 ymm accumulators (L1)
//! ```
//!
//! Any strides: transposes are read through strides while packing, never copied
//! first. Ragged edges are zero-padded in the packed panels and stored through a
//! small tile. Every element of C is summed over k in the same order whatever the
//! thread split (threads take disjoint column ranges), so the bits do not depend on
//! the thread count.

use std::cell::RefCell;

/// Rows of the micro-kernel's tile.
const MR: usize = 6;
/// Columns of the micro-kernel's tile (two 8-lane vectors).
const NR: usize = 16;
/// Depth of one packed block: an MR×KC and a KC×NR panel (6 KiB + 16 KiB) stay in L1.
const KC: usize = 256;
/// Rows of one packed A block: MC×KC floats = 132 KiB, in L2.
const MC: usize = 132;
/// Columns of one packed B block: KC×NC floats = 2 MiB, in L3.
const NC: usize = 2048;

/// One cache line of floats: packed panels start on a line, so the micro-kernel's
/// 32-byte loads of B never straddle two lines.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Line(#[allow(dead_code)] [f32; 16]);

thread_local! {
    /// This thread's packing buffers (A block, B block), allocated on first use.
    static PACKS: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A buffer of lines as floats.
fn floats(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: `Line` is 16 f32s with no padding (64 bytes, align 64).
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

/// A matrix view: base pointer and (row, column) strides in elements.
#[derive(Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a view is an address and strides; `gemm`'s contract says who may write where
// (threads of one call write disjoint columns).
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> *const f32 {
        self.ptr
            .wrapping_offset(i as isize * self.rs + j as isize * self.cs)
    }
}

/// Whether this CPU runs the packed GEMM (AVX2 and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + lhs[m×k]·rhs[k×n]` over columns
/// `cols.start..cols.end` of dst and rhs.
///
/// # Safety
/// [`available`] must be true; the views must describe valid f32 matrices of these
/// shapes, `dst` writable and overlapping neither input.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gemm(
    m: usize,
    k: usize,
    cols: std::ops::Range<usize>,
    dst: View,
    lhs: View,
    rhs: View,
    accumulate: bool,
) {
    PACKS.with(|packs| {
        let mut packs = packs.borrow_mut();
        let (a_lines, b_lines) = &mut *packs;
        if a_lines.is_empty() {
            a_lines.resize((MC * KC).div_ceil(16), Line([0.0; 16]));
            b_lines.resize((KC * NC).div_ceil(16), Line([0.0; 16]));
        }
        let (a_pack, b_pack) = (floats(a_lines), floats(b_lines));
        let mut jc = cols.start;
        while jc < cols.end {
            let nc = NC.min(cols.end - jc);
            let mut pc = 0;
            while pc < k || (k == 0 && pc == 0) {
                let kc = KC.min(k - pc);
                // SAFETY: the caller's contract covers every element packed or stored.
                unsafe {
                    pack_b(b_pack, rhs, pc, kc, jc, nc);
                    let mut ic = 0;
                    while ic < m {
                        let mc = MC.min(m - ic);
                        // A is read in place when its rows are contiguous (the micro-kernel
                        // streams MR rows); otherwise, and for a ragged last panel, packed.
                        let in_place = lhs.cs == 1;
                        if !in_place {
                            pack_a(a_pack, lhs, ic, mc, pc, kc);
                        } else if !mc.is_multiple_of(MR) {
                            let last = mc / MR * MR;
                            pack_a(&mut a_pack[last * kc..], lhs, ic + last, mc - last, pc, kc);
                        }
                        let add = accumulate || pc > 0;
                        for jr in (0..nc).step_by(NR) {
                            for ir in (0..mc).step_by(MR) {
                                let rows = MR.min(mc - ir);
                                let a = if in_place && rows == MR {
                                    let origin = lhs.at(ic + ir, pc);
                                    View {
                                        ptr: origin,
                                        rs: lhs.rs,
                                        cs: lhs.cs,
                                    }
                                } else {
                                    let panel = a_pack.as_ptr().add(ir * kc);
                                    View {
                                        ptr: panel,
                                        rs: 1,
                                        cs: MR as isize,
                                    }
                                };
                                let tile = Tile {
                                    dst,
                                    row: ic + ir,
                                    col: jc + jr,
                                    rows,
                                    cols: NR.min(nc - jr),
                                    add,
                                };
                                kernel_6x16(kc, a, b_pack.as_ptr().add(jr * kc), tile);
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

/// Packs B[pc..pc+kc, jc..jc+nc] into panels of NR columns: panel jr holds, for each
/// p, NR consecutive floats (zero past the last column).
unsafe fn pack_b(pack: &mut [f32], rhs: View, pc: usize, kc: usize, jc: usize, nc: usize) {
    for jr in (0..nc).step_by(NR) {
        let width = NR.min(nc - jr);
        let panel = &mut pack[jr * kc..(jr + NR) * kc];
        if rhs.rs == 1 && width == NR {
            // Columns are contiguous (a transposed operand): 8 × 8 transposes in registers.
            let whole = kc / 8 * 8;
            // SAFETY: columns jc + jr .. + NR hold kc floats each from row pc.
            unsafe { transpose_into_panel(panel, rhs.at(pc, jc + jr), rhs.cs, whole) };
            for p in whole..kc {
                for j in 0..NR {
                    // SAFETY: inside the matrix.
                    panel[p * NR + j] = unsafe { *rhs.at(pc + p, jc + jr + j) };
                }
            }
            continue;
        }
        if rhs.rs == 1 {
            // A ragged panel of a transposed operand: read each column straight.
            for j in 0..NR {
                if j < width {
                    // SAFETY: kc contiguous floats of column jc + jr + j.
                    let column = unsafe { std::slice::from_raw_parts(rhs.at(pc, jc + jr + j), kc) };
                    for (p, x) in column.iter().enumerate() {
                        panel[p * NR + j] = *x;
                    }
                } else {
                    (0..kc).for_each(|p| panel[p * NR + j] = 0.0);
                }
            }
            continue;
        }
        for p in 0..kc {
            let row = &mut panel[p * NR..(p + 1) * NR];
            if rhs.cs == 1 && width == NR {
                // SAFETY: NR contiguous floats of row pc + p.
                let src = unsafe { std::slice::from_raw_parts(rhs.at(pc + p, jc + jr), NR) };
                row.copy_from_slice(src);
            } else {
                for (j, x) in row.iter_mut().enumerate() {
                    // SAFETY: inside the matrix when j < width.
                    *x = if j < width {
                        unsafe { *rhs.at(pc + p, jc + jr + j) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Writes rows 0..kc (a multiple of 8) of an NR-wide panel from NR columns that are
/// contiguous in memory (`column j` starts at `origin + j·stride`), eight by eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_into_panel(panel: &mut [f32], origin: *const f32, stride: isize, kc: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees kc floats in each of the NR columns; the panel
    // holds kc·NR floats.
    unsafe {
        for p in (0..kc).step_by(8) {
            for half in 0..2 {
                let r: [__m256; 8] = std::array::from_fn(|j| {
                    _mm256_loadu_ps(
                        origin.wrapping_offset((8 * half + j) as isize * stride + p as isize),
                    )
                });
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let rows = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (q, row) in rows.iter().enumerate() {
                    _mm256_storeu_ps(panel.as_mut_ptr().add((p + q) * NR + 8 * half), *row);
                }
            }
        }
    }
}

/// Packs A[ic..ic+mc, pc..pc+kc] into panels of MR rows: panel ir holds, for each p,
/// MR consecutive floats (zero past the last row).
unsafe fn pack_a(pack: &mut [f32], lhs: View, ic: usize, mc: usize, pc: usize, kc: usize) {
    for ir in (0..mc).step_by(MR) {
        let height = MR.min(mc - ir);
        let panel = &mut pack[ir * kc..(ir + MR) * kc];
        if lhs.rs == 1 {
            // Columns are contiguous (a transposed operand): MR floats per p.
            for p in 0..kc {
                for i in 0..MR {
                    // SAFETY: inside the matrix when i < height.
                    panel[p * MR + i] = if i < height {
                        unsafe { *lhs.at(ic + ir + i, pc + p) }
                    } else {
                        0.0
                    };
                }
            }
            continue;
        }
        for i in 0..MR {
            if i < height {
                // SAFETY: inside the matrix.
                for p in 0..kc {
                    panel[p * MR + i] = unsafe { *lhs.at(ic + ir + i, pc + p) };
                }
            } else {
                (0..kc).for_each(|p| panel[p * MR + i] = 0.0);
            }
        }
    }
}

/// Where one micro-tile goes.
#[derive(Clone, Copy)]
struct Tile {
    dst: View,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
    /// Add to dst (else overwrite).
    add: bool,
}

/// The 6 × 16 micro-kernel: 12 ymm accumulators, per p two loads of B, six broadcasts
/// of A (a packed panel, or MR rows of A in place) and twelve FMAs; then the tile is
/// added to (or stored into) dst.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(kc: usize, a: View, b: *const f32, tile: Tile) {
    use std::arch::x86_64::*;
    // SAFETY: a is an MR × kc matrix, b holds kc·NR floats; the tile is inside dst.
    unsafe {
        // The tile of C is read (when adding) and written after the k loop: ask for its
        // lines now so they arrive while the FMAs run.
        for i in 0..tile.rows {
            let row = tile.dst.at(tile.row + i, tile.col) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(60));
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.at(i, 0));
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            let column = p as isize * a.cs;
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*rows[i].wrapping_offset(column));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
        }
        let full = tile.rows == MR && tile.cols == NR && tile.dst.cs == 1;
        for (i, row) in acc.iter().enumerate().take(tile.rows) {
            let out = tile.dst.at(tile.row + i, tile.col) as *mut f32;
            if full {
                for (half, v) in row.iter().enumerate() {
                    let at = out.add(8 * half);
                    let v = if tile.add {
                        _mm256_add_ps(_mm256_loadu_ps(at), *v)
                    } else {
                        *v
                    };
                    _mm256_storeu_ps(at, v);
                }
            } else {
                let mut lanes = [0.0f32; NR];
                _mm256_storeu_ps(lanes.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), row[1]);
                for (j, x) in lanes.iter().enumerate().take(tile.cols) {
                    let at = tile.dst.at(tile.row + i, tile.col + j) as *mut f32;
                    *at = if tile.add { *at + x } else { *x };
                }
            }
        }
    }
}

//! Packing for the AMX GEMM ([`super::amx`]): fp32 blocks of A and B rounded to bf16
//! (nearest, ties to even, as [`crate::bf16::to_bits`]) and laid out as the tiles read
//! them, sixteen floats at a time with AVX-512F and AVX512-BF16's conversion (every CPU
//! with AMX has AVX512-BF16 too; [`crate::cpu::bf16_supported`] asks for both).
//!
//! A panel (32 rows): per step of 32 k, two tiles (rows 0–15, then 16–31), each row
//! 32 consecutive k. B panel (32 columns): per step of 32 k, two tiles (columns 0–15,
//! then 16–31), each row one pair of k (2r, 2r + 1) for 16 columns, the pair's two
//! values adjacent (VNNI-2). Rows, columns and k past the block are zero.
//!
//! A weight read as B by many products is packed once into its *whole* panels
//! ([`pack_panels`]): panel j (columns 32j..32j + 31) holds every step of k in order,
//! so the block of k from `pc` is step `pc / 32` of the panel, read in place.
//!
//! The layouts a training step multiplies have their own loops: A row-major (x, dout),
//! A column-major (doutᵀ of the weight gradient), B row-major (W in dx = dout·W), B
//! column-major (Wᵀ in the forward). Any other strides take the element-wise path.

use std::arch::x86_64::*;

use super::View;

/// Rows (columns) of a panel and k of one step.
const TILE: usize = 32;
/// bf16 elements of one step of a panel: two tiles of 16 × 32.
pub(super) const STEP_ELEMS: usize = 2 * 16 * TILE;

/// Sixteen floats rounded to bf16 by VCVTNEPS2BF16: nearest, ties to even; NaN
/// quieted; denormals to signed zero — [`crate::bf16::to_bits`]'s rule, which the
/// per-unit tests hold it to bit for bit. (The same rounding in integer operations
/// took ten instructions per sixteen floats; packing was 7% of a bf16 step on Zen 4.)
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn round16(x: __m512) -> __m256i {
    // SAFETY: both are 32-byte vector registers; every bit pattern is a valid value.
    unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x)) }
}

/// Two vectors rounded to bf16 and interleaved: lane i holds `even[i]` in its low and
/// `odd[i]` in its high 16 bits (a VNNI-2 pair of k).
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn pair(even: __m512, odd: __m512) -> __m512i {
    _mm512_or_si512(
        _mm512_cvtepu16_epi32(round16(even)),
        _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(round16(odd))),
    )
}

/// The 16 × 16 transpose of 32-bit lanes: `out[j]` lane i = `rows[i]` lane j.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn transpose16(rows: [__m512i; 16]) -> [__m512i; 16] {
    // Within each 128-bit lane: 2 × 2 blocks of 32 bits, then of 64 bits, so that u[4g + c]
    // holds, in 128-bit lane j, column 4j + c of rows 4g .. 4g + 3.
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let (a, b) = (4 * g, 4 * g + 2);
        u[4 * g] = _mm512_unpacklo_epi64(t[a], t[b]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[a], t[b]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[a + 1], t[b + 1]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[a + 1], t[b + 1]);
    }
    // Then the 128-bit lanes: column 4j + c gathers lane j of u[c], u[4 + c], u[8 + c],
    // u[12 + c].
    let mut v = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        v[c] = _mm512_shuffle_i32x4::<0x88>(u[c], u[4 + c]);
        v[4 + c] = _mm512_shuffle_i32x4::<0xdd>(u[c], u[4 + c]);
        v[8 + c] = _mm512_shuffle_i32x4::<0x88>(u[8 + c], u[12 + c]);
        v[12 + c] = _mm512_shuffle_i32x4::<0xdd>(u[8 + c], u[12 + c]);
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        out[c] = _mm512_shuffle_i32x4::<0x88>(v[c], v[8 + c]);
        out[4 + c] = _mm512_shuffle_i32x4::<0x88>(v[4 + c], v[12 + c]);
        out[8 + c] = _mm512_shuffle_i32x4::<0xdd>(v[c], v[8 + c]);
        out[12 + c] = _mm512_shuffle_i32x4::<0xdd>(v[4 + c], v[12 + c]);
    }
    out
}

/// `n` (≤ 16) contiguous floats at `p` (zero past n), as 16 bf16.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn sixteen(p: *const f32, n: usize) -> __m256i {
    let mask = ((1u32 << n.min(16)) - 1) as __mmask16;
    // SAFETY: the caller guarantees n floats at p; masked lanes are not read.
    let x = unsafe { _mm512_maskz_loadu_ps(mask, p) };
    round16(x)
}

/// Packs A[ic..ic+mc, pc..pc+kc] into 32-row panels.
///
/// # Safety
/// The block lies inside `lhs`; `pack` holds the panels (mc rounded up to 32, kc to 32).
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_a(
    pack: &mut [u16],
    lhs: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
) {
    let steps = kc.div_ceil(TILE);
    // Index of row r, k = p of a panel.
    let at =
        |r: usize, p: usize| (p / TILE) * STEP_ELEMS + (r / 16) * 512 + (r % 16) * TILE + p % TILE;
    if lhs.cs != 1 && lhs.rs == 1 {
        // Columns are contiguous (doutᵀ of a weight gradient): per 16 rows and 32 k,
        // pairs of columns rounded into 32-bit lanes (row r's pair of k), then a 16 × 16
        // transpose of those lanes gives the tile's 16 rows. A step of 32 k (32 rows of
        // dout) is packed into every panel before the next step: each of those rows is
        // read once, left to right (a panel at a time walked down dout's rows at their
        // stride, a new page a row for the MLP's gradients).
        for s in 0..steps {
            for ir in (0..mc).step_by(TILE) {
                let panel = ir / TILE * steps * STEP_ELEMS;
                let rows = TILE.min(mc - ir);
                for half in 0..2 {
                    let r0 = half * 16;
                    let n = rows.saturating_sub(r0).min(16);
                    let mask = ((1u32 << n) - 1) as __mmask16;
                    let column = |p: usize| {
                        if p < kc && n > 0 {
                            // SAFETY: column pc + p holds rows ic + ir + r0 .. + n.
                            unsafe { _mm512_maskz_loadu_ps(mask, lhs.at(ic + ir + r0, pc + p)) }
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    // The same 32 k of the next panel's 16 rows (or the next step's
                    // first panel) are asked for meanwhile: each is a new line of dout.
                    let next = match (ir + TILE < mc, s + 1 < steps) {
                        (true, _) => Some((ir + TILE + r0, s * TILE)),
                        (false, true) => Some((r0, (s + 1) * TILE)),
                        (false, false) => None,
                    };
                    let mut lanes = [_mm512_setzero_si512(); 16];
                    for (q, lane) in lanes.iter_mut().enumerate() {
                        let p = s * TILE + 2 * q;
                        if let Some((row, from)) = next {
                            for p in [from + 2 * q, from + 2 * q + 1]
                                .into_iter()
                                .filter(|p| *p < kc)
                            {
                                let ahead = lhs.ptr.wrapping_offset(
                                    (ic + row) as isize + (pc + p) as isize * lhs.cs,
                                );
                                super::prefetch_lines(ahead.cast(), 64);
                            }
                        }
                        *lane = pair(column(p), column(p + 1));
                    }
                    let rows16 = transpose16(lanes);
                    for (r, row) in rows16.iter().enumerate() {
                        let out = pack[panel + at(r0 + r, s * TILE)..].as_mut_ptr();
                        // SAFETY: the panel holds this tile row (64 bytes).
                        unsafe { _mm512_storeu_si512(out.cast::<__m512i>(), *row) };
                    }
                }
            }
        }
        return;
    }
    for ir in (0..mc).step_by(TILE) {
        let panel = &mut pack[ir / TILE * steps * STEP_ELEMS..][..steps * STEP_ELEMS];
        let rows = TILE.min(mc - ir);
        if lhs.cs == 1 {
            for r in 0..TILE {
                for s in 0..steps {
                    // Row-major A is packed a row's step of 32 k at a time, row after
                    // row of the panel: asking for the same k of the row four ahead
                    // took 1.8% off a bench-s bf16 step (`perf` had put the packing's
                    // time on its conversions, waiting for their loads). The same for
                    // the transposed A and for B's pairs of rows: not resolvable.
                    let row = (ic + ir + (r + 4).min(rows - 1)) as isize;
                    let ahead = lhs
                        .ptr
                        .wrapping_offset(row * lhs.rs + (pc + s * TILE) as isize);
                    super::prefetch_lines(ahead.cast(), 4 * TILE);
                    for half in 0..2 {
                        let k0 = s * TILE + half * 16;
                        let out = panel[at(r, k0)..].as_mut_ptr().cast::<__m256i>();
                        let n = if r < rows { kc.saturating_sub(k0) } else { 0 };
                        // SAFETY: row ic + ir + r holds kc floats from column pc when r <
                        // rows; the panel holds this step.
                        unsafe {
                            let src = lhs.at(ic + ir + r.min(rows - 1), pc + k0.min(kc));
                            _mm256_storeu_si256(out, sixteen(src, n))
                        };
                    }
                }
            }
        } else {
            for r in 0..TILE {
                for p in 0..steps * TILE {
                    panel[at(r, p)] = if r < rows && p < kc {
                        // SAFETY: inside the block.
                        crate::bf16::to_bits(unsafe { *lhs.at(ic + ir + r, pc + p) })
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// Asks for share `part` of `parts` of the `steps` steps of a panel at `panel` (its
/// 64-byte lines cut into `parts` runs), so that the panel the next tiles read arrives
/// while this panel's tiles run. A weight's panels are packed once per step and read
/// by every shard, 43 MB of them for bench-s: far past the caches, and the first block
/// of a tile, which streams the panel at 8 bytes a cycle, would wait on memory
/// (the micro-tiles alone ran at 84–90% of the unit's peak from cold panels, 95–99%
/// from warm ones). Asked into L2 (T1): into L1 (T0) gained about half as much, its
/// lines pushing out the panel in use.
#[inline]
pub(super) fn prefetch_share(panel: *const u16, steps: usize, part: usize, parts: usize) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    let lines = steps * STEP_ELEMS * 2 / 64;
    let per = lines.div_ceil(parts.max(1));
    for line in (part * per)..((part + 1) * per).min(lines) {
        // SAFETY: a prefetch never faults; the address is inside the panel.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(panel.wrapping_add(line * 32).cast()) };
    }
}

/// Offset (in bf16 elements) of the step of k from `pc` (a multiple of 32) of the whole
/// panel holding column `j` (a multiple of 32) of a B with `k` rows.
pub(super) fn panel_step(k: usize, j: usize, pc: usize) -> usize {
    (j / TILE * k.div_ceil(TILE) + pc / TILE) * STEP_ELEMS
}

/// Packs columns `cols` of B (k × n; `cols.start` a multiple of 32) into B's whole
/// panels at `pack` (laid out as [`panel_step`] reads them).
///
/// # Safety
/// `rhs` is a valid k × n matrix; `pack` holds [`crate::gemm::panels_len`]`(k, n)`
/// elements.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_panels(
    pack: *mut u16,
    rhs: View,
    k: usize,
    n: usize,
    cols: std::ops::Range<usize>,
) {
    debug_assert!(cols.start.is_multiple_of(TILE) && cols.end <= n);
    let panel = k.div_ceil(TILE) * STEP_ELEMS;
    for j in cols.step_by(TILE) {
        // SAFETY: panel j / 32 lies inside `pack` (the caller's contract).
        unsafe {
            let out = std::slice::from_raw_parts_mut(pack.add(panel_step(k, j, 0)), panel);
            pack_b(out, rhs, 0, k, j, TILE.min(n - j));
        }
    }
}

/// Packs the row groups `groups` (32 rows each) of a weight W (oc × c, row-major) into
/// both layouts the products read, in one pass over them: `forward` holds Wᵀ's panels
/// (k = c, n = oc: panel g is W's rows 32g..) and `backward` W's (k = oc, n = c: the
/// step of k from 32g of every panel is the same rows). Each group is read from memory
/// once and packed twice while it is in cache (packed apart, the weights were read
/// twice a step: 2 × 41 MiB on bench-s). The same elements as [`pack_panels`] of
/// either layout.
///
/// # Safety
/// `weight` holds oc × c floats; `forward` and `backward` hold the panels of k × n =
/// c × oc and oc × c ([`crate::gemm::panels_len`]), these groups' parts of them written
/// by no one else.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_weight_panels(
    [forward, backward]: [*mut u16; 2],
    weight: *const f32,
    [c, oc]: [usize; 2],
    groups: std::ops::Range<usize>,
) {
    let w = View {
        ptr: weight,
        rs: c as isize,
        cs: 1,
    };
    let wt = View {
        ptr: weight,
        rs: 1,
        cs: c as isize,
    };
    for g in groups {
        let r0 = g * TILE;
        // SAFETY (both): inside the caller's matrices and panels.
        unsafe { pack_panels(forward, wt, c, oc, r0..(r0 + TILE).min(oc)) };
        for j in (0..c).step_by(TILE) {
            unsafe {
                let step = backward.add(panel_step(oc, j, r0));
                let out = std::slice::from_raw_parts_mut(step, STEP_ELEMS);
                pack_b(out, w, r0, TILE.min(oc - r0), j, TILE.min(c - j));
            }
        }
    }
}

/// Packs B[pc..pc+kc, jc..jc+nc] into 32-column VNNI-2 panels.
///
/// # Safety
/// The block lies inside `rhs`; `pack` holds the panels (nc rounded up to 32, kc to 32).
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_b(
    pack: &mut [u16],
    rhs: View,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
) {
    let steps = kc.div_ceil(TILE);
    // Index of pair q (k = 2q, 2q + 1) of column j of a panel.
    let at = |q: usize, j: usize| {
        (2 * q / TILE) * STEP_ELEMS + (j / 16) * 512 + (q % 16) * TILE + (j % 16) * 2
    };
    if rhs.cs == 1 {
        // Rows are contiguous: two rows (a pair of k) of 16 columns give one tile row:
        // the even k in each lane's low half, the odd k in its high half. Each pair of
        // rows is read once, left to right across every panel: a panel at a time walked
        // down the rows at their stride (6 KiB for the MLP's activations, a new page a
        // row), which the hardware prefetchers do not follow.
        for q in 0..steps * 16 {
            for jr in (0..nc).step_by(TILE) {
                let panel = jr / TILE * steps * STEP_ELEMS;
                let cols = TILE.min(nc - jr);
                for half in 0..2 {
                    let j0 = half * 16;
                    let n = cols.saturating_sub(j0).min(16);
                    let mask = ((1u32 << n) - 1) as __mmask16;
                    let row = |p: usize| {
                        if p < kc && n > 0 {
                            // SAFETY: row pc + p holds columns jc + jr + j0 .. + n.
                            unsafe { _mm512_maskz_loadu_ps(mask, rhs.at(pc + p, jc + jr + j0)) }
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    let pair = pair(row(2 * q), row(2 * q + 1));
                    let out = pack[panel + at(q, j0)..].as_mut_ptr().cast::<__m512i>();
                    // SAFETY: the panel holds this tile row.
                    unsafe { _mm512_storeu_si512(out, pair) };
                }
            }
        }
        return;
    }
    for jr in (0..nc).step_by(TILE) {
        let panel = &mut pack[jr / TILE * steps * STEP_ELEMS..][..steps * STEP_ELEMS];
        let cols = TILE.min(nc - jr);
        if rhs.rs == 1 {
            // Columns are contiguous (Wᵀ of a forward product): 32 k of a column rounded
            // are 16 pairs in 32-bit lanes; 16 columns' lanes transposed give the tile's
            // 16 rows of pairs.
            for s in 0..steps {
                for half in 0..2 {
                    let j0 = half * 16;
                    let mut lanes = [_mm512_setzero_si512(); 16];
                    for (j, lane) in lanes.iter_mut().enumerate() {
                        if j0 + j >= cols {
                            continue;
                        }
                        let k0 = s * TILE;
                        let n = kc.saturating_sub(k0);
                        // SAFETY: column jc + jr + j0 + j holds kc floats from row pc.
                        let src = unsafe { rhs.at(pc + k0.min(kc - 1), jc + jr + j0 + j) };
                        // SAFETY: `sixteen` reads at most the n floats left in the column.
                        let (lo, hi) = unsafe {
                            (
                                sixteen(src, n),
                                sixteen(src.wrapping_add(16), n.saturating_sub(16)),
                            )
                        };
                        *lane = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    }
                    let rows16 = transpose16(lanes);
                    for (q, row) in rows16.iter().enumerate() {
                        let out = panel[at(s * 16 + q, j0)..].as_mut_ptr().cast::<__m512i>();
                        // SAFETY: the panel holds this tile row (64 bytes).
                        unsafe { _mm512_storeu_si512(out, *row) };
                    }
                }
            }
        } else {
            for q in 0..steps * 16 {
                for j in 0..TILE {
                    for e in 0..2 {
                        let p = 2 * q + e;
                        panel[at(q, j) + e] = if j < cols && p < kc {
                            // SAFETY: inside the block.
                            crate::bf16::to_bits(unsafe { *rhs.at(pc + p, jc + jr + j) })
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

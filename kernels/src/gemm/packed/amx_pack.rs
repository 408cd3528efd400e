//! Packing for the AMX GEMM ([`super::amx`]): fp32 blocks of A and B rounded to bf16
//! (nearest, ties to even, as [`crate::bf16::to_bits`]) and laid out as the tiles read
//! them, sixteen floats at a time with AVX-512F.
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

/// Sixteen floats rounded to bf16, each lane's result in its upper 16 bits: nearest,
/// ties to even; NaN quieted; denormals to signed zero ([`crate::bf16::to_bits`]).
#[inline]
#[target_feature(enable = "avx512f")]
fn round_upper(x: __m512) -> __m512i {
    let bits = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    let magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
    let exponent = _mm512_and_si512(bits, _mm512_set1_epi32(0x7f80_0000));
    let tiny = _mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512());
    let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000));
    let signed_zero = _mm512_and_si512(bits, _mm512_set1_epi32(i32::MIN));
    let out = _mm512_mask_mov_epi32(rounded, nan, quiet);
    _mm512_mask_mov_epi32(out, tiny, signed_zero)
}

/// `n` (≤ 16) contiguous floats at `p` (zero past n), as 16 bf16.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn sixteen(p: *const f32, n: usize) -> __m256i {
    let mask = ((1u32 << n.min(16)) - 1) as __mmask16;
    // SAFETY: the caller guarantees n floats at p; masked lanes are not read.
    let x = unsafe { _mm512_maskz_loadu_ps(mask, p) };
    _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(round_upper(x)))
}

/// Packs A[ic..ic+mc, pc..pc+kc] into 32-row panels.
///
/// # Safety
/// The block lies inside `lhs`; `pack` holds the panels (mc rounded up to 32, kc to 32).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_a(
    pack: &mut [u16],
    lhs: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
) {
    let steps = kc.div_ceil(TILE);
    for ir in (0..mc).step_by(TILE) {
        let panel = &mut pack[ir / TILE * steps * STEP_ELEMS..][..steps * STEP_ELEMS];
        let rows = TILE.min(mc - ir);
        let at = |r: usize, p: usize| {
            (p / TILE) * STEP_ELEMS + (r / 16) * 512 + (r % 16) * TILE + p % TILE
        };
        if lhs.cs == 1 {
            for r in 0..TILE {
                for s in 0..steps {
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
        } else if lhs.rs == 1 {
            // Columns are contiguous: convert 16 rows of a column at a time, then place
            // each value in its row.
            for p in 0..steps * TILE {
                for half in 0..2 {
                    let r0 = half * 16;
                    let n = if p < kc { rows.saturating_sub(r0) } else { 0 };
                    let mut column = [0u16; 16];
                    // SAFETY: column pc + p holds rows ic + ir + r0 .. + n.
                    unsafe {
                        let src =
                            lhs.at(ic + ir + r0.min(rows - 1), pc + p.min(kc.saturating_sub(1)));
                        _mm256_storeu_si256(column.as_mut_ptr().cast(), sixteen(src, n));
                    }
                    let out = panel.as_mut_ptr();
                    for (i, v) in column.iter().enumerate() {
                        // SAFETY: row r0 + i < 32 and k p < steps · 32: inside the panel.
                        unsafe { *out.add(at(r0 + i, p)) = *v };
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
#[target_feature(enable = "avx512f")]
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

/// Packs B[pc..pc+kc, jc..jc+nc] into 32-column VNNI-2 panels.
///
/// # Safety
/// The block lies inside `rhs`; `pack` holds the panels (nc rounded up to 32, kc to 32).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b(
    pack: &mut [u16],
    rhs: View,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
) {
    let steps = kc.div_ceil(TILE);
    for jr in (0..nc).step_by(TILE) {
        let panel = &mut pack[jr / TILE * steps * STEP_ELEMS..][..steps * STEP_ELEMS];
        let cols = TILE.min(nc - jr);
        // Index of pair q (k = 2q, 2q + 1) of column j.
        let at = |q: usize, j: usize| {
            (2 * q / TILE) * STEP_ELEMS + (j / 16) * 512 + (q % 16) * TILE + (j % 16) * 2
        };
        if rhs.cs == 1 {
            // Rows are contiguous: two rows (a pair of k) of 16 columns give one tile
            // row: the even k in each lane's low half, the odd k in its high half.
            for q in 0..steps * 16 {
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
                    let (even, odd) = (round_upper(row(2 * q)), round_upper(row(2 * q + 1)));
                    let pair = _mm512_or_si512(
                        _mm512_srli_epi32::<16>(even),
                        _mm512_and_si512(odd, _mm512_set1_epi32(0xffff_0000u32 as i32)),
                    );
                    let out = panel[at(q, j0)..].as_mut_ptr().cast::<__m512i>();
                    // SAFETY: the panel holds this tile row.
                    unsafe { _mm512_storeu_si512(out, pair) };
                }
            }
        } else if rhs.rs == 1 {
            // Columns are contiguous: 16 k of a column are 8 pairs, each placed in its
            // tile row.
            for j in 0..TILE {
                for s in 0..steps * 2 {
                    let k0 = s * 16;
                    let n = if j < cols { kc.saturating_sub(k0) } else { 0 };
                    let mut pairs = [0u32; 8];
                    // SAFETY: column jc + jr + j holds kc floats from row pc when j < cols.
                    unsafe {
                        let src =
                            rhs.at(pc + k0.min(kc.saturating_sub(1)), jc + jr + j.min(cols - 1));
                        _mm256_storeu_si256(pairs.as_mut_ptr().cast(), sixteen(src, n));
                    }
                    let out = panel.as_mut_ptr();
                    for (t, v) in pairs.iter().enumerate() {
                        // SAFETY: pair k0 / 2 + t of column j is inside this step of the
                        // panel (the panel holds `steps` steps).
                        unsafe { out.add(at(k0 / 2 + t, j)).cast::<u32>().write_unaligned(*v) };
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

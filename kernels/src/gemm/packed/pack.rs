//! Packing: copying a block of A or B into the panel order a micro-kernel streams,
//! reading any strides (transposed operands included) and zero-padding ragged edges.

use super::{MicroKernel, View};

/// Packs B[pc..pc+kc, jc..jc+nc] into panels of NR columns: panel jr holds, for each
/// p, NR consecutive floats (zero past the last column).
pub(super) unsafe fn pack_b<K: MicroKernel>(
    pack: &mut [f32],
    rhs: View,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
) {
    let nr = K::NR;
    for jr in (0..nc).step_by(nr) {
        let width = nr.min(nc - jr);
        let panel = &mut pack[jr * kc..(jr + nr) * kc];
        if rhs.rs == 1 && width == nr {
            // Columns are contiguous (a transposed operand): 8 × 8 transposes in registers.
            let whole = kc / 8 * 8;
            // SAFETY: columns jc + jr .. + NR hold kc floats each from row pc; the
            // micro-kernels that pack need AVX2 (AVX-512 CPUs have it too).
            unsafe { transpose_into_panel(panel, nr, rhs.at(pc, jc + jr), rhs.cs, whole) };
            for p in whole..kc {
                for j in 0..nr {
                    // SAFETY: inside the matrix.
                    panel[p * nr + j] = unsafe { *rhs.at(pc + p, jc + jr + j) };
                }
            }
            continue;
        }
        if rhs.rs == 1 {
            // A ragged panel of a transposed operand: read each column straight.
            for j in 0..nr {
                if j < width {
                    // SAFETY: kc contiguous floats of column jc + jr + j.
                    let column = unsafe { std::slice::from_raw_parts(rhs.at(pc, jc + jr + j), kc) };
                    for (p, x) in column.iter().enumerate() {
                        panel[p * nr + j] = *x;
                    }
                } else {
                    (0..kc).for_each(|p| panel[p * nr + j] = 0.0);
                }
            }
            continue;
        }
        if rhs.cs == 1 && width == nr {
            // Rows are contiguous: NR floats per p, moved as vectors (a `copy_from_slice`
            // per p is a call of memcpy per 64 or 128 bytes).
            // SAFETY: rows pc .. pc + kc hold NR floats from column jc + jr.
            unsafe { copy_rows_into_panel(panel, nr, rhs.at(pc, jc + jr), rhs.rs, kc) };
            continue;
        }
        for p in 0..kc {
            let row = &mut panel[p * nr..(p + 1) * nr];
            if rhs.cs == 1 && width == nr {
                // SAFETY: NR contiguous floats of row pc + p.
                let src = unsafe { std::slice::from_raw_parts(rhs.at(pc + p, jc + jr), nr) };
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

/// Writes rows 0..kc (a multiple of 8) of an `nr`-wide panel (a multiple of 8) from
/// `nr` columns that are contiguous in memory (`column j` starts at
/// `origin + j·stride`), eight by eight.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_into_panel(
    panel: &mut [f32],
    nr: usize,
    origin: *const f32,
    stride: isize,
    kc: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees kc floats in each of the nr columns; the panel
    // holds kc·nr floats.
    unsafe {
        for group in 0..nr / 8 {
            for p in (0..kc).step_by(8) {
                if p % 16 == 0 {
                    // Eight streams of W rows: ask for the line after next of each.
                    for j in 0..8 {
                        let ahead = (8 * group + j) as isize * stride + p as isize + 32;
                        _mm_prefetch::<_MM_HINT_T0>(origin.wrapping_offset(ahead) as *const i8);
                    }
                }
                let r: [__m256; 8] = std::array::from_fn(|j| {
                    _mm256_loadu_ps(
                        origin.wrapping_offset((8 * group + j) as isize * stride + p as isize),
                    )
                });
                let rows = transpose8(r);
                for (q, row) in rows.iter().enumerate() {
                    _mm256_storeu_ps(panel.as_mut_ptr().add((p + q) * nr + 8 * group), *row);
                }
            }
        }
    }
}

/// Packs A[ic..ic+mc, pc..pc+kc] into panels of MR rows: panel ir holds, for each p,
/// MR consecutive floats (zero past the last row).
pub(super) unsafe fn pack_a<K: MicroKernel>(
    pack: &mut [f32],
    lhs: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
) {
    let mr = K::MR;
    for ir in (0..mc).step_by(mr) {
        let height = mr.min(mc - ir);
        let panel = &mut pack[ir * kc..(ir + mr) * kc];
        if lhs.rs == 1 && height == mr {
            // Columns are contiguous (a transposed operand): MR floats per p.
            for p in 0..kc {
                // SAFETY: MR contiguous floats of column pc + p.
                let src = unsafe { std::slice::from_raw_parts(lhs.at(ic + ir, pc + p), mr) };
                panel[p * mr..(p + 1) * mr].copy_from_slice(src);
            }
            continue;
        }
        if lhs.rs == 1 {
            // The ragged last panel of a transposed operand.
            for p in 0..kc {
                for i in 0..mr {
                    // SAFETY: inside the matrix when i < height.
                    panel[p * mr + i] = if i < height {
                        unsafe { *lhs.at(ic + ir + i, pc + p) }
                    } else {
                        0.0
                    };
                }
            }
            continue;
        }
        let mut i = 0;
        if lhs.cs == 1 {
            // Rows are contiguous: transpose 8 or 4 of them at a time in registers.
            let whole = kc / 8 * 8;
            while i + 4 <= height {
                let rows = if i + 8 <= height { 8 } else { 4 };
                // SAFETY: rows i .. i + rows of the panel hold kc floats from column
                // pc; the micro-kernels that pack need AVX2 (AVX-512 CPUs have it too).
                unsafe {
                    let origin = lhs.at(ic + ir + i, pc);
                    transpose_rows_into_panel(&mut panel[i..], mr, rows, origin, lhs.rs, whole)
                };
                for p in whole..kc {
                    for r in i..i + rows {
                        // SAFETY: inside the matrix.
                        panel[p * mr + r] = unsafe { *lhs.at(ic + ir + r, pc + p) };
                    }
                }
                i += rows;
            }
        }
        for i in i..mr {
            if i < height {
                // SAFETY: inside the matrix.
                for p in 0..kc {
                    panel[p * mr + i] = unsafe { *lhs.at(ic + ir + i, pc + p) };
                }
            } else {
                (0..kc).for_each(|p| panel[p * mr + i] = 0.0);
            }
        }
    }
}

/// Writes columns 0..kc (a multiple of 8) of `rows` (8 or 4) consecutive rows of an
/// A panel (`mr` floats per p, starting at `panel[0]`) from rows that are contiguous
/// in memory (`row r` starts at `origin + r·stride`).
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_rows_into_panel(
    panel: &mut [f32],
    mr: usize,
    rows: usize,
    origin: *const f32,
    stride: isize,
    kc: usize,
) {
    use std::arch::x86_64::*;
    let out = panel.as_mut_ptr();
    // SAFETY: the caller guarantees kc floats in each row; the panel holds kc·mr
    // floats from its start.
    unsafe {
        let row = |r: usize, p: usize| origin.wrapping_offset(r as isize * stride + p as isize);
        for p in (0..kc).step_by(8) {
            if rows == 8 {
                let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(row(j, p)));
                for (q, v) in transpose8(r).iter().enumerate() {
                    _mm256_storeu_ps(out.add((p + q) * mr), *v);
                }
            } else {
                for half in 0..2 {
                    let at = p + 4 * half;
                    let (mut r0, mut r1, mut r2, mut r3) = (
                        _mm_loadu_ps(row(0, at)),
                        _mm_loadu_ps(row(1, at)),
                        _mm_loadu_ps(row(2, at)),
                        _mm_loadu_ps(row(3, at)),
                    );
                    _MM_TRANSPOSE4_PS(&mut r0, &mut r1, &mut r2, &mut r3);
                    for (q, v) in [r0, r1, r2, r3].iter().enumerate() {
                        _mm_storeu_ps(out.add((at + q) * mr), *v);
                    }
                }
            }
        }
    }
}

/// The 8 × 8 transpose of eight rows in ymm registers.
#[target_feature(enable = "avx2,fma")]
fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
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
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Copies `nr` (a multiple of 8) floats from each of kc rows (`row p` starts at
/// `origin + p·stride`) into an `nr`-wide panel. The micro-kernels' widths get a copy
/// of fixed size (vector moves); a loop of run-time length here is turned into a call
/// of memcpy per row by the compiler, which measured 4% of a training step.
#[target_feature(enable = "avx2,fma")]
unsafe fn copy_rows_into_panel(
    panel: &mut [f32],
    nr: usize,
    origin: *const f32,
    stride: isize,
    kc: usize,
) {
    #[inline(always)]
    unsafe fn rows<const NR: usize>(out: *mut f32, origin: *const f32, stride: isize, kc: usize) {
        for p in 0..kc {
            // SAFETY: forwarded from the caller.
            unsafe {
                let row = origin.wrapping_offset(p as isize * stride);
                let v = row.cast::<[f32; NR]>().read_unaligned();
                out.add(p * NR).cast::<[f32; NR]>().write_unaligned(v);
            }
        }
    }
    let out = panel.as_mut_ptr();
    // SAFETY: the caller guarantees nr floats in each of the kc rows; the panel holds
    // kc·nr floats.
    unsafe {
        match nr {
            16 => rows::<16>(out, origin, stride, kc),
            32 => rows::<32>(out, origin, stride, kc),
            _ => {
                for p in 0..kc {
                    let row = origin.wrapping_offset(p as isize * stride);
                    std::ptr::copy_nonoverlapping(row, out.add(p * nr), nr);
                }
            }
        }
    }
}

//! The 512-bit micro-kernel: 12 × 32, 24 zmm accumulators (of the 32 zmm registers:
//! two for B, the rest free for the scheduler); per p two loads of B and twelve
//! broadcasts of A folded into the FMAs (`vfmadd231ps zmm, zmm, [a]{1to16}`), 24 FMAs.
//! That is the shape the AVX-512 sgemm kernels of the x86 BLAS libraries use (BLIS's
//! 32 × 12 column-major tile is this one transposed): enough independent FMA chains
//! to cover two FMA units × 4 cycles of latency three times over, and one load of A
//! per two FMAs.
//!
//! A is always packed, so the kernel reads one pointer at constant offsets; a ragged
//! last panel runs a kernel compiled for exactly its row count (no wasted FMAs), and
//! ragged columns are stored through masks.

use std::arch::x86_64::*;

use super::{Epilogue, MicroKernel, Tile, View};

pub(super) struct Kernel;

impl MicroKernel for Kernel {
    const MR: usize = 12;
    const NR: usize = 32;
    /// The KC × NR panel of B (32 KiB) stays in L1 (48 KiB on Sapphire Rapids, 32 on
    /// Skylake-X) while A panels (12 KiB each) stream from L2.
    const KC: usize = 256;
    /// MC × KC floats = 960 KiB, half of a 2 MiB L2.
    const MC: usize = 960;
    /// KC × NC floats = 4 MiB, in L3.
    const NC: usize = 4096;
    const A_IN_PLACE: bool = false;

    unsafe fn epilogue(tile: Tile, epilogue: Epilogue) {
        // SAFETY: forwarded; the CPU has the features (this kernel was chosen).
        unsafe { finish_avx512(tile, epilogue) }
    }

    unsafe fn tile(kc: usize, a: View, b: *const f32, tile: Tile) {
        debug_assert!(a.rs == 1 && a.cs == Self::MR as isize);
        // SAFETY: forwarded; the dispatcher chose this kernel because the CPU has
        // AVX-512F.
        unsafe {
            match tile.rows {
                12 => rows::<12>(kc, a.ptr, b, tile),
                11 => rows::<11>(kc, a.ptr, b, tile),
                10 => rows::<10>(kc, a.ptr, b, tile),
                9 => rows::<9>(kc, a.ptr, b, tile),
                8 => rows::<8>(kc, a.ptr, b, tile),
                7 => rows::<7>(kc, a.ptr, b, tile),
                6 => rows::<6>(kc, a.ptr, b, tile),
                5 => rows::<5>(kc, a.ptr, b, tile),
                4 => rows::<4>(kc, a.ptr, b, tile),
                3 => rows::<3>(kc, a.ptr, b, tile),
                2 => rows::<2>(kc, a.ptr, b, tile),
                _ => rows::<1>(kc, a.ptr, b, tile),
            }
        }
    }
}

/// `R` rows of the tile: `a` is a packed panel (MR floats per p), `b` a packed panel
/// (NR floats per p).
#[target_feature(enable = "avx512f")]
unsafe fn rows<const R: usize>(kc: usize, a: *const f32, b: *const f32, tile: Tile) {
    const MR: usize = Kernel::MR;
    const NR: usize = Kernel::NR;
    // SAFETY: a holds kc·MR floats, b kc·NR; the tile is inside dst.
    unsafe {
        // The tile of C is read (when adding) and written after the k loop: ask for its
        // lines (128 bytes a row, three lines when unaligned) while the FMAs run.
        for i in 0..R {
            let row = tile.dst.at(tile.row + i, tile.col) as *const i8;
            super::prefetch_lines(row, 4 * NR);
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (mut ap, mut bp) = (a, b);
        // One step of p: two vectors of B, R broadcasts of A, 2R FMAs.
        let step = |acc: &mut [[__m512; 2]; R], ap: *const f32, bp: *const f32| {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
        };
        // Four steps per trip: the loop's pointer and counter updates (integer ops
        // that can take the FMA ports) come once per 8R FMAs instead of once per 2R.
        for _ in 0..kc / 4 {
            for u in 0..4 {
                step(&mut acc, ap.add(u * MR), bp.add(u * NR));
            }
            ap = ap.add(4 * MR);
            bp = bp.add(4 * NR);
        }
        for _ in 0..kc % 4 {
            step(&mut acc, ap, bp);
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        store(&acc, tile, std::ptr::null());
    }
}

/// Adds (or stores) the accumulators into the tile: full vectors, masked vectors for
/// ragged columns, lane by lane when dst's columns are not contiguous. Unless `bias` is
/// null (it then points at the bias of the tile's first column; dst's columns must be
/// contiguous), each row is `(C + acc) + bias`, or `acc + bias`: the bias epilogue's
/// addition, made before the store instead of after it (the same two roundings).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store<const R: usize>(acc: &[[__m512; 2]; R], tile: Tile, bias: *const f32) {
    debug_assert!(bias.is_null() || tile.dst.cs == 1);
    // SAFETY: the tile is inside dst.
    unsafe {
        if tile.dst.cs != 1 {
            for (i, row) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; 32];
                _mm512_storeu_ps(lanes.as_mut_ptr(), row[0]);
                _mm512_storeu_ps(lanes.as_mut_ptr().add(16), row[1]);
                super::store_scalar(tile, i, &lanes);
            }
            return;
        }
        let mask = |from: usize| -> __mmask16 {
            let n = tile.cols.saturating_sub(from).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let masks = [mask(0), mask(16)];
        let full = tile.cols == 32;
        let biases = match bias.is_null() {
            true => None,
            false => {
                Some([0, 1].map(|half| _mm512_maskz_loadu_ps(masks[half], bias.add(16 * half))))
            }
        };
        for (i, row) in acc.iter().enumerate() {
            let out = tile.dst.at(tile.row + i, tile.col) as *mut f32;
            for (half, v) in row.iter().enumerate() {
                let at = out.add(16 * half);
                let plus_bias = |v| match biases {
                    Some(b) => _mm512_add_ps(v, b[half]),
                    None => v,
                };
                if full {
                    let v = if tile.add {
                        _mm512_add_ps(_mm512_loadu_ps(at), *v)
                    } else {
                        *v
                    };
                    _mm512_storeu_ps(at, plus_bias(v));
                } else {
                    let m = masks[half];
                    let v = if tile.add {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(m, at), *v)
                    } else {
                        *v
                    };
                    _mm512_mask_storeu_ps(at, m, plus_bias(v));
                }
            }
        }
    }
}

/// The epilogue, compiled for this kernel's vector width.
#[target_feature(enable = "avx512f")]
unsafe fn finish_avx512(tile: Tile, epilogue: Epilogue) {
    // SAFETY: forwarded.
    unsafe { super::epilogue::apply(tile, epilogue) }
}

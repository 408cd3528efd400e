//! The 256-bit micro-kernel: 6 × 16, 12 ymm accumulators; per p two loads of B, six
//! broadcasts of A (a packed panel, or MR rows of A in place) and twelve FMAs.

use super::{Epilogue, MicroKernel, Tile, View};

pub(super) struct Kernel;

impl MicroKernel for Kernel {
    const MR: usize = 6;
    const NR: usize = 16;
    /// An MR×KC and a KC×NR panel (6 KiB + 16 KiB) stay in L1.
    const KC: usize = 256;
    /// MC×KC floats = 132 KiB, in L2.
    const MC: usize = 132;
    /// KC×NC floats = 2 MiB, in L3.
    const NC: usize = 2048;
    const A_IN_PLACE: bool = true;

    unsafe fn epilogue(tile: Tile, epilogue: Epilogue) {
        // SAFETY: forwarded; the CPU has the features (this kernel was chosen).
        unsafe { finish_avx2(tile, epilogue) }
    }

    unsafe fn tile(kc: usize, a: View, b: *const f32, tile: Tile) {
        // SAFETY: forwarded; the dispatcher chose this kernel because the CPU has AVX2.
        unsafe { kernel_6x16(kc, a, b, tile) }
    }
}

/// The tile, then added to (or stored into) dst.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(kc: usize, a: View, b: *const f32, tile: Tile) {
    use std::arch::x86_64::*;
    const MR: usize = Kernel::MR;
    const NR: usize = Kernel::NR;
    // SAFETY: a is an MR × kc matrix, b holds kc·NR floats; the tile is inside dst.
    unsafe {
        // The tile of C is read (when adding) and written after the k loop: ask for its
        // lines now so they arrive while the FMAs run.
        for i in 0..tile.rows {
            let row = tile.dst.at(tile.row + i, tile.col) as *const i8;
            super::prefetch_lines(row, 4 * NR);
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
                super::store_scalar(tile, i, &lanes);
            }
        }
    }
}

/// The epilogue, compiled for this kernel's vector width.
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_avx2(tile: Tile, epilogue: Epilogue) {
    // SAFETY: forwarded.
    unsafe { super::epilogue::apply(tile, epilogue) }
}

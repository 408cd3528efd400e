//! The products of one head, with each operand packed once for all the tiles that read
//! it: a head's keys and values once per head, a query block's rows once per block, a
//! chunk's probabilities once per chunk. Before this, every product packed both of
//! its operands again (K and V once per query block, Q once per chunk).
//!
//! Where the native packed GEMM runs ([`crate::gemm::packed`]) and the key block is a
//! whole number of the micro-tile's columns (so a chunk's first key starts a panel),
//! operands are packed here and multiplied by [`panels::multiply`]; otherwise each
//! product is [`product`] on the plain matrices. Either way every element is the same
//! micro-kernel's sum over the same k blocks, so the bits are the same.
//!
//! In bf16 (`train.precision`) every operand is rounded as it is packed: on a matrix
//! unit into its bf16 panels ([`panels::multiply_bf16`], a key block of a multiple of
//! 32), on the emulated unit into the fp32 panels, rounded in place; a plain product
//! rounds its own operands. The route is fixed per call and every tile's k order by the
//! loops, so the bits do not depend on the thread count.

use crate::bf16::Precision;
use crate::cpu::{Bf16Unit, Isa};
use crate::gemm::sgemm::{Operand, product};

#[cfg(target_arch = "x86_64")]
use crate::gemm::packed::{View, panels};

/// A matrix operand: its plain view, and its packed panels where packing runs
/// (pointer, floats per row of an A panel or column of a B panel, first k read).
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    view: Operand,
    packed: Option<(*const f32, usize, usize)>,
}

impl Mat {
    /// This B operand from column `c0` on (`c0` starts a panel where packed).
    pub fn columns_from(self, c0: usize) -> Mat {
        let (ptr, rs, cs) = self.view;
        Mat {
            view: (ptr.wrapping_offset(c0 as isize * cs), rs, cs),
            packed: self
                .packed
                .map(|(p, per_column, from)| (p.wrapping_add(c0 * per_column), per_column, from)),
        }
    }

    /// This operand from row (of B: k index) `p0` on, the panels read from depth `p0`.
    pub fn depth_from(self, p0: usize) -> Mat {
        let (ptr, rs, cs) = self.view;
        Mat {
            view: (ptr.wrapping_offset(p0 as isize * rs), rs, cs),
            packed: self.packed.map(|(p, per, from)| (p, per, from + p0)),
        }
    }
}

/// Where a head's products run.
#[derive(Clone, Copy)]
enum Route {
    /// The product on the plain matrices (each packs its operands itself).
    Plain,
    /// fp32 panels of `isa`'s micro-kernel (in bf16: rounded after packing, the
    /// emulated unit's arithmetic).
    Panels(Isa),
    /// bf16 panels of a matrix unit (AMX, AVX512-BF16).
    Tiles(Bf16Unit),
}

/// How a head's products run (chosen once per call).
#[derive(Clone, Copy)]
pub(crate) struct Products {
    route: Route,
    precision: Precision,
}

impl Products {
    /// Packed panels when this CPU runs the native GEMM and `block` is a multiple of
    /// its micro-tile's columns (of the matrix unit's 32 in bf16, where one runs);
    /// plain products otherwise. Every product in `precision`.
    pub fn for_block(block: usize, precision: Precision) -> Products {
        #[cfg(target_arch = "x86_64")]
        if crate::gemm::packed::available() {
            let unit = crate::cpu::bf16_unit();
            if precision == Precision::Bf16
                && crate::gemm::packed::reads_panels(unit)
                && block.is_multiple_of(panels::BF16_TILE)
            {
                let route = Route::Tiles(unit);
                return Products { route, precision };
            }
            let isa = crate::cpu::isa();
            if block.is_multiple_of(crate::gemm::packed::tile_columns(isa)) {
                let route = Route::Panels(isa);
                return Products { route, precision };
            }
        }
        let _ = block;
        let route = Route::Plain;
        Products { route, precision }
    }

    /// Floats an m × k A operand's panels take (0 when products run plain).
    pub fn a_len(self, m: usize, k: usize) -> usize {
        #[cfg(target_arch = "x86_64")]
        match self.route {
            Route::Panels(isa) => return panels::a_len(isa, m, k).next_multiple_of(16),
            Route::Tiles(_) => return panels::bf16_len(m, k).div_ceil(2).next_multiple_of(16),
            Route::Plain => {}
        }
        let _ = (m, k);
        0
    }

    /// Floats a k × n B operand's panels take (0 when products run plain).
    pub fn b_len(self, k: usize, n: usize) -> usize {
        #[cfg(target_arch = "x86_64")]
        match self.route {
            Route::Panels(isa) => return panels::b_len(isa, k, n).next_multiple_of(16),
            Route::Tiles(_) => return panels::bf16_len(n, k).div_ceil(2).next_multiple_of(16),
            Route::Plain => {}
        }
        let _ = (k, n);
        0
    }

    /// `lhs` (m × k) as an A operand, packed into `buf` where packing runs.
    ///
    /// # Safety
    /// `lhs` is a valid m × k matrix; `buf` holds [`Products::a_len`] floats.
    pub unsafe fn a(self, buf: &mut [f32], lhs: Operand, [m, k]: [usize; 2]) -> Mat {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded; the route was chosen for this CPU.
        unsafe {
            match self.route {
                Route::Panels(isa) => panels::pack_a(isa, buf, view(lhs), m, k),
                Route::Tiles(_) => panels::pack_a_bf16(halves(buf), view(lhs), m, k),
                Route::Plain => {}
            }
        }
        self.operand(buf, lhs, k, self.a_len(m, k))
    }

    /// `rhs` (k × n) as a B operand, packed into `buf` where packing runs.
    ///
    /// # Safety
    /// `rhs` is a valid k × n matrix; `buf` holds [`Products::b_len`] floats.
    pub unsafe fn b(self, buf: &mut [f32], rhs: Operand, [k, n]: [usize; 2]) -> Mat {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded; the route was chosen for this CPU.
        unsafe {
            match self.route {
                Route::Panels(isa) => panels::pack_b(isa, buf, view(rhs), k, n),
                Route::Tiles(_) => panels::pack_b_bf16(halves(buf), view(rhs), k, n),
                Route::Plain => {}
            }
        }
        self.operand(buf, rhs, k, self.b_len(k, n))
    }

    /// `matrix` (`depth` deep) as an operand: its panels (the first `len` floats of
    /// `buf`; rounded here on the emulated unit) where packing runs, else the plain
    /// matrix.
    fn operand(self, buf: &mut [f32], matrix: Operand, depth: usize, len: usize) -> Mat {
        let packed = match self.route {
            Route::Plain => None,
            Route::Panels(_) => {
                if self.precision == Precision::Bf16 {
                    crate::bf16::round_slice(&mut buf[..len]);
                }
                Some((buf.as_ptr(), depth, 0))
            }
            // Floats per row (column) of a panel: its steps of 32 k, two bf16 per float.
            Route::Tiles(_) => Some((buf.as_ptr(), depth.div_ceil(32) * 16, 0)),
        };
        Mat {
            view: matrix,
            packed,
        }
    }

    /// `dst[m×n] (+)= a · b` on this thread.
    ///
    /// # Safety
    /// The operands are valid for these sizes (packed ones still alive); `dst` is a
    /// writable m × n matrix overlapping neither.
    pub unsafe fn mul(self, dims: [usize; 3], dst: Operand, a: Mat, b: Mat, accumulate: bool) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(pa), Some(pb)) = (a.packed, b.packed) {
            match self.route {
                Route::Panels(isa) => {
                    let panels = |(ptr, depth, from)| panels::Panels { ptr, depth, from };
                    let (a, b) = (panels(pa), panels(pb));
                    // SAFETY: forwarded; `for_block` checked the CPU.
                    unsafe { panels::multiply(isa, dims, view(dst), a, b, accumulate) };
                    return;
                }
                Route::Tiles(unit) => {
                    let panels = |(ptr, per, from): (*const f32, usize, usize)| {
                        let (ptr, steps) = (ptr.cast::<u16>(), per / 16);
                        panels::Bf16Panels { ptr, steps, from }
                    };
                    let (a, b) = (panels(pa), panels(pb));
                    // SAFETY: forwarded; `for_block` checked the unit.
                    unsafe { panels::multiply_bf16(unit, dims, view(dst), a, b, accumulate) };
                    return;
                }
                Route::Plain => {}
            }
        }
        // SAFETY: forwarded.
        unsafe { product(dims, dst, a.view, b.view, accumulate, self.precision) }
    }
}

/// A buffer of floats as bf16 elements (twice as many).
#[cfg(target_arch = "x86_64")]
fn halves(buf: &mut [f32]) -> &mut [u16] {
    // SAFETY: any bits are valid u16s; the length covers the same bytes.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len() * 2) }
}

#[cfg(target_arch = "x86_64")]
fn view((ptr, rs, cs): Operand) -> View {
    View { ptr, rs, cs }
}

/// Floats of scratch that [`carve`] needs for buffers of these lengths.
pub(crate) fn carved_len(lens: &[usize]) -> usize {
    16 + lens.iter().sum::<usize>()
}

/// Cuts `scratch` (of [`carved_len`] floats) into consecutive buffers of the given
/// lengths, the first starting on a 64-byte line (and so every one whose predecessors'
/// lengths are multiples of 16, as [`Products`]' are: packed panels on cache lines).
pub(crate) fn carve<const N: usize>(scratch: &mut [f32], lens: [usize; N]) -> [&mut [f32]; N] {
    let skip = scratch.as_ptr().align_offset(64).min(16);
    let mut scratch = &mut scratch[skip..];
    lens.map(|len| {
        let (head, rest) = std::mem::take(&mut scratch).split_at_mut(len);
        scratch = rest;
        head
    })
}

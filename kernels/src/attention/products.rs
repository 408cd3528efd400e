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

use crate::cpu::Isa;
use crate::gemm::sgemm::{Operand, product};

#[cfg(target_arch = "x86_64")]
use crate::gemm::packed::{View, panels};

/// A matrix operand: its plain view, and its packed panels where packing runs.
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
                .map(|(p, depth, from)| (p.wrapping_add(c0 * depth), depth, from)),
        }
    }

    /// This operand from row (of B: k index) `p0` on, the panels read from depth `p0`.
    pub fn depth_from(self, p0: usize) -> Mat {
        let (ptr, rs, cs) = self.view;
        Mat {
            view: (ptr.wrapping_offset(p0 as isize * rs), rs, cs),
            packed: self.packed.map(|(p, depth, from)| (p, depth, from + p0)),
        }
    }
}

/// How a head's products run (chosen once per call).
#[derive(Clone, Copy)]
pub(crate) struct Products {
    isa: Option<Isa>,
}

impl Products {
    /// Packed panels when this CPU runs the native GEMM and `block` is a multiple of
    /// its micro-tile's columns; plain products otherwise.
    pub fn for_block(block: usize) -> Products {
        #[cfg(target_arch = "x86_64")]
        if crate::gemm::packed::available() {
            let isa = crate::cpu::isa();
            if block.is_multiple_of(crate::gemm::packed::tile_columns(isa)) {
                return Products { isa: Some(isa) };
            }
        }
        let _ = block;
        Products { isa: None }
    }

    /// Floats an m × k A operand's panels take (0 when products run plain).
    pub fn a_len(self, m: usize, k: usize) -> usize {
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = self.isa {
            return panels::a_len(isa, m, k).next_multiple_of(16);
        }
        let _ = (m, k);
        0
    }

    /// Floats a k × n B operand's panels take (0 when products run plain).
    pub fn b_len(self, k: usize, n: usize) -> usize {
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = self.isa {
            return panels::b_len(isa, k, n).next_multiple_of(16);
        }
        let _ = (k, n);
        0
    }

    /// `lhs` (m × k) as an A operand, packed into `buf` where packing runs.
    ///
    /// # Safety
    /// `lhs` is a valid m × k matrix; `buf` holds [`Products::a_len`] floats.
    pub unsafe fn a(self, buf: &mut [f32], lhs: Operand, [m, k]: [usize; 2]) -> Mat {
        // SAFETY: forwarded.
        #[cfg(target_arch = "x86_64")]
        let pack = |isa, buf: &mut [f32]| unsafe { panels::pack_a(isa, buf, view(lhs), m, k) };
        #[cfg(not(target_arch = "x86_64"))]
        let pack = |_: Isa, _: &mut [f32]| {};
        self.operand(buf, lhs, k, pack)
    }

    /// `rhs` (k × n) as a B operand, packed into `buf` where packing runs.
    ///
    /// # Safety
    /// `rhs` is a valid k × n matrix; `buf` holds [`Products::b_len`] floats.
    pub unsafe fn b(self, buf: &mut [f32], rhs: Operand, [k, n]: [usize; 2]) -> Mat {
        // SAFETY: forwarded.
        #[cfg(target_arch = "x86_64")]
        let pack = |isa, buf: &mut [f32]| unsafe { panels::pack_b(isa, buf, view(rhs), k, n) };
        #[cfg(not(target_arch = "x86_64"))]
        let pack = |_: Isa, _: &mut [f32]| {};
        self.operand(buf, rhs, k, pack)
    }

    /// `matrix` as an operand: packed by `pack` into `buf` (panels `depth` deep) where
    /// packing runs, else plain.
    fn operand(
        self,
        buf: &mut [f32],
        matrix: Operand,
        depth: usize,
        pack: impl FnOnce(Isa, &mut [f32]),
    ) -> Mat {
        let packed = self.isa.map(|isa| {
            pack(isa, buf);
            (buf.as_ptr(), depth, 0)
        });
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
        if let (Some(isa), Some(pa), Some(pb)) = (self.isa, a.packed, b.packed) {
            let panels = |(ptr, depth, from)| panels::Panels { ptr, depth, from };
            // SAFETY: forwarded; `for_block` checked the CPU.
            unsafe { panels::multiply(isa, dims, view(dst), panels(pa), panels(pb), accumulate) };
            return;
        }
        // SAFETY: forwarded.
        unsafe { product(dims, dst, a.view, b.view, accumulate) }
    }
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

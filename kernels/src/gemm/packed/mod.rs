//! The native GEMM: `C (+)= A·B` at the full vector width of the CPU, packing into
//! per-thread buffers that are allocated once (the first call on a thread), so a
//! training step allocates nothing. The layout is BLIS's:
//!
//! ```text
//! for jc in columns, NC at a time          B block (KC × NC) packed into NR-wide panels (L3)
//!   for pc in depth, KC at a time          (in order: each C element sums its k blocks in order)
//!     pack B[pc.., jc..]
//!     for ic in rows, MC at a time         A block (MC × KC) packed into MR-tall panels (L2)
//!       (pack A[ic.., pc..] unless the micro-kernel reads it in place)
//!       for each NR panel, each MR panel:  MR × NR micro-kernel, accumulators in registers (L1)
//! ```
//!
//! Two micro-kernels, chosen once at run time by [`crate::cpu::isa`]:
//! - [`avx512`]: 12 × 32, 24 zmm accumulators, A always packed (one pointer, broadcasts
//!   folded into the FMAs), ragged row counts compiled as their own kernels;
//! - [`avx2`]: 6 × 16, 12 ymm accumulators, row-major A read in place.
//!
//! CPUs with neither use the `gemm` crate (see `sgemm`).
//!
//! Any strides: transposes are read through strides while packing, never copied
//! first. Ragged edges are zero-padded in the packed panels and stored through a
//! mask or a small tile. Every element of C is summed over k in the same order
//! whatever the thread split (threads take disjoint column ranges), so the bits do not
//! depend on the thread count.

pub mod amx;
mod amx_pack;
mod avx2;
mod avx512;
mod dpbf16;
mod epilogue;
mod pack;
pub mod panels;

pub use epilogue::Epilogue;

use std::cell::RefCell;

use crate::cpu::{Bf16Unit, Isa};

/// One cache line of floats: packed panels start on a line, so the micro-kernels'
/// vector loads of B never straddle two lines.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Line(#[allow(dead_code)] [f32; 16]);

thread_local! {
    /// This thread's packing buffers (A block, B block), grown on first use to the
    /// largest blocking of any micro-kernel it runs, never again.
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

/// Asks for every cache line of the `bytes` bytes from `p` into L1 (a prefetch never
/// faults): two for a 64-byte-aligned row of 32 floats, three for one that straddles.
/// Each line once: asking for an aligned row's second line twice cost 0.8% of a
/// bench-s bf16 step and 1.6% of an fp32 one (Zen 4).
#[inline(always)]
fn prefetch_lines(p: *const i8, bytes: usize) {
    prefetch_lines_into::<{ std::arch::x86_64::_MM_HINT_T0 }>(p, bytes)
}

/// [`prefetch_lines`] into the cache level of `HINT` (`_MM_HINT_T0`: L1, `_MM_HINT_T1`: L2).
#[inline(always)]
fn prefetch_lines_into<const HINT: i32>(p: *const i8, bytes: usize) {
    use std::arch::x86_64::_mm_prefetch;
    let first = p as usize & !63;
    let last = (p as usize + bytes.max(1) - 1) & !63;
    let mut line = first;
    while line <= last {
        // SAFETY: prefetches do not fault.
        unsafe { _mm_prefetch::<HINT>(line as *const i8) };
        line += 64;
    }
}

/// A register-blocked micro-kernel and the cache blocking derived for it.
trait MicroKernel {
    /// Rows of the tile.
    const MR: usize;
    /// Columns of the tile.
    const NR: usize;
    /// Depth of one packed block: the KC × NR panel of B stays in L1.
    const KC: usize;
    /// Rows of one packed A block (MC × KC, in L2).
    const MC: usize;
    /// Columns of one packed B block (KC × NC, in L3).
    const NC: usize;
    /// Whether row-major A is read in place (else always packed).
    const A_IN_PLACE: bool;
    /// `tile (+)= a[rows × kc] · b[kc × NR]`; `a` is a packed panel (rs 1, cs MR) or,
    /// when `A_IN_PLACE`, MR rows of A itself.
    unsafe fn tile(kc: usize, a: View, b: *const f32, tile: Tile);
    /// Applies an epilogue to a finished tile (vectorised at the kernel's width).
    unsafe fn epilogue(tile: Tile, epilogue: Epilogue);
}

/// A bf16 product: the unit it runs on and, when its right operand was packed ahead
/// ([`pack_panels`]), those panels (else null). Only the matrix units read panels; the
/// emulated unit packs rhs itself.
#[derive(Clone, Copy)]
pub struct Bf16 {
    pub unit: Bf16Unit,
    pub panels: *const u16,
}

// SAFETY: panels are read only, during a step in which no one writes them.
unsafe impl Send for Bf16 {}
unsafe impl Sync for Bf16 {}

/// Whether products on `unit` read a B operand's panels packed ahead ([`pack_panels`]).
pub fn reads_panels(unit: Bf16Unit) -> bool {
    matches!(unit, Bf16Unit::Amx | Bf16Unit::Avx512Bf16)
}

/// Packs columns `cols` of `rhs` (k × n) into its whole bf16 panels at `panels`, the
/// layout the AMX and AVX512-BF16 micro-tiles read: a weight rounded and laid out once
/// per step instead of once per product. `cols.start` is a multiple of
/// [`PANEL_COLUMNS`].
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16; `rhs` is a valid k × n matrix; `panels` holds
/// [`crate::gemm::panels_len`]`(k, n)` elements, of which these columns' are written by no one else.
pub unsafe fn pack_panels(
    panels: *mut u16,
    rhs: View,
    k: usize,
    n: usize,
    cols: std::ops::Range<usize>,
) {
    // SAFETY: forwarded.
    unsafe { amx_pack::pack_panels(panels, rhs, k, n, cols) }
}

/// Packs W's rows in groups `groups` of [`PANEL_COLUMNS`] into both of a weight's
/// panel layouts at once: Wᵀ's (`forward`, k = c, n = oc) and W's (`backward`, k = oc,
/// n = c) — each group read once for both.
///
/// # Safety
/// As [`pack_panels`]; `weight` is an oc × c row-major matrix; `forward` and `backward`
/// hold [`crate::gemm::panels_len`]`(c, oc)` and `(oc, c)` elements, these groups'
/// parts written by no one else.
pub unsafe fn pack_weight_panels(
    panels: [*mut u16; 2],
    weight: *const f32,
    [c, oc]: [usize; 2],
    groups: std::ops::Range<usize>,
) {
    // SAFETY: forwarded.
    unsafe { amx_pack::pack_weight_panels(panels, weight, [c, oc], groups) }
}

/// Columns of one panel ([`pack_panels`]'s unit of work).
pub const PANEL_COLUMNS: usize = crate::gemm::PANEL;

/// Whether this CPU runs a native micro-kernel (AVX2 + FMA at least).
pub fn available() -> bool {
    crate::cpu::isa() >= Isa::Avx2
}

/// Columns of the micro-tile of `isa` (thread splits of the columns are multiples of it).
pub fn tile_columns(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => avx512::Kernel::NR,
        _ => avx2::Kernel::NR,
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + lhs[m×k]·rhs[k×n]` over columns
/// `cols.start..cols.end` of dst and rhs, with the micro-kernel of `isa`, then the
/// epilogue on each finished tile. With `bf16`, both operands are rounded to bf16 as
/// they are packed and the products run on that unit: AMX tiles ([`amx`]), or `isa`'s
/// fp32 micro-kernel on the rounded values (`Emulated`).
///
/// # Safety
/// `isa` must be Avx2 or Avx512 and supported by this CPU ([`crate::cpu::supports`]),
/// and a `bf16` unit supported too ([`crate::cpu::bf16_supported`]);
/// the views must describe valid f32 matrices of these shapes, `dst` writable and
/// overlapping neither input; an epilogue needs dst's columns contiguous, its bias
/// n floats and its GELU output dst's layout.
pub unsafe fn gemm(
    isa: Isa,
    m: usize,
    k: usize,
    cols: std::ops::Range<usize>,
    dst: View,
    (lhs, rhs, bf16): (View, View, Option<Bf16>),
    accumulate: bool,
    epilogue: Epilogue,
) {
    assert!(
        epilogue.is_none() || dst.cs == 1,
        "an epilogue needs contiguous rows"
    );
    if let Some(Bf16 {
        unit: unit @ (Bf16Unit::Amx | Bf16Unit::Avx512Bf16),
        panels,
    }) = bf16
    {
        let operands = (lhs, rhs, panels);
        // SAFETY: forwarded (the caller checked that the unit is supported).
        unsafe { amx::gemm(unit, m, k, cols, dst, operands, accumulate, epilogue) };
        return;
    }
    let bf16 = bf16.is_some();
    let operands = Operands {
        dst,
        lhs,
        rhs,
        bf16,
        accumulate,
        epilogue,
    };
    // SAFETY: forwarded.
    unsafe {
        match isa {
            Isa::Avx512 => blocked::<avx512::Kernel>(m, k, cols, operands),
            Isa::Avx2 => blocked::<avx2::Kernel>(m, k, cols, operands),
            Isa::Portable => panic!("the packed GEMM needs AVX2 or AVX-512"),
        }
    }
}

/// The matrices of one call and what to do with the result.
#[derive(Clone, Copy)]
struct Operands {
    dst: View,
    lhs: View,
    rhs: View,
    /// Round both operands to bf16 as they are packed (sums stay fp32).
    bf16: bool,
    accumulate: bool,
    epilogue: Epilogue,
}

/// The five BLIS loops around micro-kernel `K`.
unsafe fn blocked<K: MicroKernel>(
    m: usize,
    k: usize,
    cols: std::ops::Range<usize>,
    operands: Operands,
) {
    let Operands {
        dst,
        lhs,
        rhs,
        bf16,
        accumulate,
        epilogue,
    } = operands;
    PACKS.with(|packs| {
        let mut packs = packs.borrow_mut();
        let (a_lines, b_lines) = &mut *packs;
        let (a_need, b_need) = ((K::MC * K::KC).div_ceil(16), (K::KC * K::NC).div_ceil(16));
        if a_lines.len() < a_need {
            a_lines.resize(a_need, Line([0.0; 16]));
        }
        if b_lines.len() < b_need {
            b_lines.resize(b_need, Line([0.0; 16]));
        }
        let (a_pack, b_pack) = (floats(a_lines), floats(b_lines));
        let mut jc = cols.start;
        while jc < cols.end {
            let nc = K::NC.min(cols.end - jc);
            let mut pc = 0;
            while pc < k || (k == 0 && pc == 0) {
                let kc = K::KC.min(k - pc);
                // SAFETY: the caller's contract covers every element packed or stored.
                unsafe {
                    pack::pack_b::<K>(b_pack, rhs, pc, kc, jc, nc);
                    if bf16 {
                        crate::bf16::round_slice(&mut b_pack[..nc.next_multiple_of(K::NR) * kc]);
                    }
                    let mut ic = 0;
                    while ic < m {
                        let mc = K::MC.min(m - ic);
                        let in_place = K::A_IN_PLACE && lhs.cs == 1 && !bf16;
                        if !in_place {
                            pack::pack_a::<K>(a_pack, lhs, ic, mc, pc, kc);
                            if bf16 {
                                let len = mc.next_multiple_of(K::MR) * kc;
                                crate::bf16::round_slice(&mut a_pack[..len]);
                            }
                        } else if !mc.is_multiple_of(K::MR) {
                            // The ragged last panel is packed (zero rows past the end).
                            let last = mc / K::MR * K::MR;
                            let rest = &mut a_pack[last * kc..];
                            pack::pack_a::<K>(rest, lhs, ic + last, mc - last, pc, kc);
                        }
                        let add = accumulate || pc > 0;
                        let last = pc + kc >= k;
                        let micro = |jr: usize, ir: usize| {
                            let rows = K::MR.min(mc - ir);
                            let a = if in_place && rows == K::MR {
                                View {
                                    ptr: lhs.at(ic + ir, pc),
                                    rs: lhs.rs,
                                    cs: lhs.cs,
                                }
                            } else {
                                View {
                                    ptr: a_pack.as_ptr().add(ir * kc),
                                    rs: 1,
                                    cs: K::MR as isize,
                                }
                            };
                            let tile = Tile {
                                dst,
                                row: ic + ir,
                                col: jc + jr,
                                rows,
                                cols: K::NR.min(nc - jr),
                                add,
                            };
                            if last && !epilogue.is_none() {
                                epilogue::prefetch::<{ epilogue::INTO_L1 }>(tile, epilogue);
                            }
                            K::tile(kc, a, b_pack.as_ptr().add(jr * kc), tile);
                            if last && !epilogue.is_none() {
                                K::epilogue(tile, epilogue);
                            }
                        };
                        if last && !epilogue.is_none() {
                            // An A panel stays in L1 while the B panels stream from L2,
                            // so the tiles (and the epilogue's rows of its own matrices)
                            // advance along rows: streams the prefetchers follow.
                            for ir in (0..mc).step_by(K::MR) {
                                for jr in (0..nc).step_by(K::NR) {
                                    micro(jr, ir);
                                }
                            }
                        } else {
                            // One KC × NR panel of B stays in L1 while the A panels
                            // stream from L2. (The other order measured the same on
                            // Sapphire Rapids.)
                            for jr in (0..nc).step_by(K::NR) {
                                for ir in (0..mc).step_by(K::MR) {
                                    micro(jr, ir);
                                }
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

/// Stores (or adds) row `i` of a tile lane by lane: the path for ragged columns and
/// for a destination whose columns are not contiguous.
unsafe fn store_scalar(tile: Tile, i: usize, lanes: &[f32]) {
    for (j, x) in lanes.iter().enumerate().take(tile.cols) {
        // SAFETY: the tile is inside dst.
        unsafe {
            let at = tile.dst.at(tile.row + i, tile.col + j) as *mut f32;
            *at = if tile.add { *at + x } else { *x };
        }
    }
}

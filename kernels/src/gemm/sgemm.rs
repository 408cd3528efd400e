//! The GEMM entry points the JIT calls: `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, every
//! operand a base pointer and (row, column) strides in elements, optionally followed
//! by an epilogue (bias, bias + GELU) applied to each tile of dst while it is hot.
//!
//! The multiply is native code at the CPU's full width: `packed`'s AVX-512 or
//! AVX2 micro-kernels, chosen at run time; on other CPUs the `gemm` crate, with the
//! epilogue as a second pass. Cranelift has 128-bit vectors only, which is why the
//! JIT calls out for the FLOPs and does everything around them itself.

use crate::bf16::Precision;
use crate::gemm::epilogue::Epilogue;

thread_local! {
    /// Threads one native GEMM call may use (set per worker by the runtime).
    static GEMM_THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// Lets GEMMs called from this thread split their output over `threads` rayon threads
/// (of the pool the caller runs in). Used when there are fewer shards than threads.
/// Threads take disjoint columns of the output (the `gemm` crate fallback: rows and
/// columns), never a split of the reduction over k, so every element is summed in the
/// same order on any thread count (tested).
pub fn set_gemm_threads(threads: usize) {
    GEMM_THREADS.with(|t| t.set(threads.max(1)));
}

/// `dst (+)= lhs · rhs`; `accumulate ≠ 0` adds to `dst`; `precision` is a
/// [`Precision`]'s code (bf16: operands rounded to bf16, sums in fp32); `panels` is
/// null or rhs's bf16 panels, packed ahead by [`cllm_bf16_weight_panels`] (read instead of rhs
/// by the matrix units).
///
/// # Safety
/// The pointers and strides must describe valid, non-overlapping (for `dst`) f32
/// matrices, and `panels` rhs's current panels; the JIT only calls it with tensors of
/// the plan.
pub unsafe extern "C" fn cllm_sgemm(
    m: i64,
    n: i64,
    k: i64,
    dst: *mut f32,
    dst_rs: i64,
    dst_cs: i64,
    lhs: *const f32,
    lhs_rs: i64,
    lhs_cs: i64,
    rhs: *const f32,
    rhs_rs: i64,
    rhs_cs: i64,
    accumulate: i64,
    precision: i64,
    panels: *const u16,
) {
    let (lhs, rhs) = (operand(lhs, lhs_rs, lhs_cs), operand(rhs, rhs_rs, rhs_cs));
    let operands = (lhs, rhs, Precision::from_code(precision), panels);
    let dst = operand(dst as *const f32, dst_rs, dst_cs);
    let dims = [m, n, k].map(|x| x as usize);
    // SAFETY: forwarded from the caller's contract.
    unsafe { sgemm(dims, dst, operands, accumulate != 0, Epilogue::NONE) }
}

/// `dst = lhs · rhs + bias` (bias a row vector of n floats, or null) and, unless
/// `gelu_out` is null, `gelu_out = gelu(dst)` (gelu_out has dst's layout; dst's rows
/// must be contiguous): the fused forward of a linear layer.
///
/// # Safety
/// As [`cllm_sgemm`]; `bias` holds n floats, `gelu_out` m rows of dst's row stride.
pub unsafe extern "C" fn cllm_sgemm_bias_gelu(
    m: i64,
    n: i64,
    k: i64,
    dst: *mut f32,
    dst_rs: i64,
    lhs: *const f32,
    lhs_rs: i64,
    lhs_cs: i64,
    rhs: *const f32,
    rhs_rs: i64,
    rhs_cs: i64,
    bias: *const f32,
    gelu_out: *mut f32,
    precision: i64,
    panels: *const u16,
) {
    let epilogue = Epilogue {
        bias,
        gelu: gelu_out,
        ..Epilogue::NONE
    };
    let (lhs, rhs) = (operand(lhs, lhs_rs, lhs_cs), operand(rhs, rhs_rs, rhs_cs));
    let operands = (lhs, rhs, Precision::from_code(precision), panels);
    // SAFETY: forwarded from the caller's contract.
    unsafe { fused([m, n, k], (dst, dst_rs), operands, false, epilogue) }
}

/// `dst (+)= lhs · rhs`, then `dpre (+)= dst ⊙ gelu'(pre)` (both adding when
/// `accumulate` is not 0, both storing when it is; pre and dpre of dst's layout, dst's
/// rows contiguous): the backward of a linear layer whose input is a GELU's output,
/// with the GELU's backward applied to each finished tile of dst.
///
/// # Safety
/// As [`cllm_sgemm`]; `pre` and `dpre` hold m rows of dst's row stride, `dpre`
/// overlapping nothing else.
pub unsafe extern "C" fn cllm_sgemm_gelu_backward(
    m: i64,
    n: i64,
    k: i64,
    dst: *mut f32,
    dst_rs: i64,
    lhs: *const f32,
    lhs_rs: i64,
    lhs_cs: i64,
    rhs: *const f32,
    rhs_rs: i64,
    rhs_cs: i64,
    pre: *const f32,
    dpre: *mut f32,
    accumulate: i64,
    precision: i64,
    panels: *const u16,
) {
    let epilogue = Epilogue {
        gelu_backward: (pre, dpre),
        stores_dpre: accumulate == 0,
        ..Epilogue::NONE
    };
    let (lhs, rhs) = (operand(lhs, lhs_rs, lhs_cs), operand(rhs, rhs_rs, rhs_cs));
    let operands = (lhs, rhs, Precision::from_code(precision), panels);
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        fused(
            [m, n, k],
            (dst, dst_rs),
            operands,
            accumulate != 0,
            epilogue,
        )
    }
}

/// Packs the weight `weight` (oc × c, row-major) into its two bf16 panel layouts —
/// `forward`, Wᵀ's (k = c, n = oc) for the forward product, and `backward`, W's (k = oc,
/// n = c) for the input gradient's — when this CPU's bf16 unit reads panels
/// ([`crate::gemm::packed::reads_panels`]; else it writes nothing): the weights of a
/// bf16 step, rounded and laid out once per step rather than in every product, each
/// read once for both layouts. W's 32-row groups are split over the calling pool's
/// threads.
///
/// # Safety
/// `weight` holds oc × c floats; `forward` and `backward` hold `panels_len(c, oc)` and
/// `panels_len(oc, c)` bf16 elements that no one else touches meanwhile.
pub unsafe extern "C" fn cllm_bf16_weight_panels(
    forward: *mut u16,
    backward: *mut u16,
    weight: *const f32,
    c: i64,
    oc: i64,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::gemm::packed::{PANEL_COLUMNS, pack_weight_panels, reads_panels};
        if !(crate::gemm::packed::available() && reads_panels(crate::cpu::bf16_unit())) {
            return;
        }
        let (c, oc) = (c as usize, oc as usize);
        let groups = oc.div_ceil(PANEL_COLUMNS);
        let per = groups.div_ceil(rayon::current_num_threads()).max(1);
        // Addresses, shared by the parts.
        let [forward, backward, weight] = [forward as usize, backward as usize, weight as usize];
        let part = |t: usize| {
            let mine = t * per..groups.min((t + 1) * per);
            let (panels, weight) = (
                [forward as *mut u16, backward as *mut u16],
                weight as *const f32,
            );
            // SAFETY: forwarded from the caller's contract; parts write disjoint groups'
            // panels; the unit is AMX or AVX512-BF16, so the CPU has AVX-512F.
            unsafe { pack_weight_panels(panels, weight, [c, oc], mine) }
        };
        use rayon::prelude::*;
        (0..groups.div_ceil(per)).into_par_iter().for_each(part);
    }
}

/// The fused entry points' body: a product into dst (rows contiguous), then the
/// epilogue on each finished tile.
///
/// # Safety
/// As the entry points that call it.
unsafe fn fused(
    dims: [i64; 3],
    (dst, dst_rs): (*mut f32, i64),
    operands: Operands,
    accumulate: bool,
    epilogue: Epilogue,
) {
    let dst = operand(dst as *const f32, dst_rs, 1);
    let dims = dims.map(|x| x as usize);
    // SAFETY: forwarded from the caller's contract.
    unsafe { sgemm(dims, dst, operands, accumulate, epilogue) }
}

/// Threads a GEMM called from this thread may use ([`set_gemm_threads`]).
pub(crate) fn gemm_threads() -> usize {
    GEMM_THREADS.with(|t| t.get())
}

/// A matrix: base pointer, row stride and column stride in elements.
pub(crate) type Operand = (*const f32, isize, isize);

/// A product's two operands, its precision and rhs's bf16 panels (or null).
type Operands = (Operand, Operand, Precision, *const u16);

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` on this thread alone: the products inside a
/// kernel that itself runs one task per thread (attention's tiles, one head a task).
///
/// # Safety
/// As [`cllm_sgemm`].
pub(crate) unsafe fn product(
    [m, n, k]: [usize; 3],
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
    precision: Precision,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        let operands = (lhs, rhs, precision, std::ptr::null());
        sgemm_on(1, [m, n, k], dst, operands, accumulate, Epilogue::NONE)
    }
}

fn operand(ptr: *const f32, rs: i64, cs: i64) -> Operand {
    (ptr, rs as isize, cs as isize)
}

/// The dispatcher: the packed GEMM split over this thread's GEMM threads, or the
/// `gemm` crate and a separate epilogue pass.
unsafe fn sgemm(
    dims: [usize; 3],
    dst: Operand,
    operands: Operands,
    accumulate: bool,
    epilogue: Epilogue,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { sgemm_on(gemm_threads(), dims, dst, operands, accumulate, epilogue) }
}

/// How a product of `n` columns splits over `threads` threads: (each part's columns, a
/// multiple of `tile`; the number of parts). The last part may be narrower; the widest
/// decides how long the split product takes.
pub fn column_split(n: usize, threads: usize, tile: usize) -> (usize, usize) {
    let width = n.div_ceil(threads.max(1)).next_multiple_of(tile).max(tile);
    (width, n.div_ceil(width))
}

/// Rows a row block of a split product is a multiple of: every micro-kernel's tile
/// height divides it (12 and 6 rows for AVX-512 and AVX2, 8 for AVX512-BF16, 16 and 32
/// for AMX), so each block's tiles are the unsplit product's tiles, element for element.
pub const ROW_BLOCK: usize = 96;

/// How `m` rows split over `threads` threads left over by the column split: (each
/// block's rows, a multiple of [`ROW_BLOCK`]; the number of blocks).
pub fn row_split(m: usize, threads: usize) -> (usize, usize) {
    if threads <= 1 || m <= ROW_BLOCK {
        return (m.max(1), 1);
    }
    let height = m.div_ceil(threads).next_multiple_of(ROW_BLOCK);
    (height, m.div_ceil(height))
}

/// How a product splits: column parts of `width` columns, each cut into row blocks of
/// `height` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub width: usize,
    pub column_parts: usize,
    pub height: usize,
    pub row_parts: usize,
}

/// The split of an m × n product over `threads` threads with the smallest largest
/// part: columns in multiples of `tile` ([`column_split`]), and with the threads a
/// column count leaves over, row blocks ([`row_split`]); of equal largest parts, the
/// one with fewer parts (each part packs its own operands). Which split is taken
/// changes no bit: each element is summed over k in the same order in any part.
pub fn split(m: usize, n: usize, threads: usize, tile: usize) -> Split {
    let whole = Split {
        width: n,
        column_parts: 1,
        height: m,
        row_parts: 1,
    };
    if threads <= 1 {
        return whole;
    }
    let (mut best, mut best_area) = (whole, usize::MAX);
    for wanted in 1..=threads.min(n.div_ceil(tile.max(1))) {
        let (width, column_parts) = column_split(n, wanted, tile);
        let (height, row_parts) = row_split(m, threads / column_parts);
        let area = width.min(n) * height.min(m);
        let parts = column_parts * row_parts;
        if area < best_area || (area == best_area && parts < best.column_parts * best.row_parts) {
            best_area = area;
            best = Split {
                width,
                column_parts,
                height,
                row_parts,
            };
        }
    }
    best
}

/// The share of a product's one-thread time its largest part takes on `threads`
/// threads ([`split`] with this CPU's micro-tile).
pub fn product_share(m: usize, n: usize, threads: usize) -> f64 {
    let Split { width, height, .. } = split(m, n, threads, product_tile());
    (width.min(n) as f64 / n.max(1) as f64) * (height.min(m) as f64 / m.max(1) as f64)
}

/// The columns of one micro-tile of this CPU's fp32 products (a split's unit: 1 where
/// the portable fallback splits freely).
pub fn product_tile() -> usize {
    #[cfg(target_arch = "x86_64")]
    if crate::gemm::packed::available() {
        return crate::gemm::packed::tile_columns(crate::cpu::isa());
    }
    1
}

/// [`sgemm`] on `threads` threads.
unsafe fn sgemm_on(
    threads: usize,
    [m, n, k]: [usize; 3],
    dst: Operand,
    (lhs, rhs, precision, panels): Operands,
    accumulate: bool,
    epilogue: Epilogue,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::gemm::packed::available() {
        use crate::gemm::packed::{Bf16, PANEL_COLUMNS, View, gemm, tile_columns};
        let isa = crate::cpu::isa();
        let bf16 = (precision == Precision::Bf16).then(|| Bf16 {
            unit: crate::cpu::bf16_unit(),
            panels,
        });
        let view = |(ptr, rs, cs): Operand| View { ptr, rs, cs };
        let (d, l, rhs_view) = (view(dst), view(lhs), view(rhs));
        // Disjoint column ranges, a multiple of the micro-tile (and of a panel, when
        // rhs was packed ahead) wide, one per thread.
        let tile = match panels.is_null() {
            true => tile_columns(isa),
            false => tile_columns(isa).max(PANEL_COLUMNS),
        };
        let Split {
            width,
            column_parts,
            height,
            row_parts,
        } = split(m, n, threads, tile);
        let parts = column_parts * row_parts;
        let part = |t: usize| {
            let (c, r) = (t % column_parts, t / column_parts);
            let cols = c * width..n.min((c + 1) * width);
            let rows = r * height..m.min((r + 1) * height);
            let from = rows.start as isize;
            let at = |v: View| View {
                ptr: v.ptr.wrapping_offset(from * v.rs),
                ..v
            };
            let epilogue = epilogue.from_row(from, d.rs);
            // SAFETY: forwarded from the caller's contract; the parts write disjoint
            // blocks of dst; `available` checked the CPU.
            unsafe {
                gemm(
                    isa,
                    rows.len(),
                    k,
                    cols,
                    at(d),
                    (at(l), rhs_view, bf16),
                    accumulate,
                    epilogue,
                )
            }
        };
        if parts <= 1 {
            part(0);
        } else {
            use rayon::prelude::*;
            (0..parts).into_par_iter().for_each(part);
        }
        return;
    }
    let _ = panels; // read by the matrix units only
    let (lhs, rhs) = match precision {
        Precision::Fp32 => (lhs, rhs),
        // SAFETY: forwarded from the caller's contract.
        Precision::Bf16 => unsafe { rounded_copies([m, n, k], lhs, rhs) },
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0 as *mut f32,
            dst.2,
            dst.1,
            accumulate,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            1.0,
            1.0,
            false,
            false,
            false,
            match threads {
                1 => gemm::Parallelism::None,
                threads => gemm::Parallelism::Rayon(threads),
            },
        );
        crate::gemm::epilogue::pass(m, n, dst, epilogue);
    }
}

thread_local! {
    /// The portable path's bf16-rounded copies of both operands, grown to the largest
    /// product this thread has run, never again.
    static ROUNDED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Row-major copies of `lhs` (m × k) and `rhs` (k × n) with every element rounded to
/// bf16, in this thread's buffers (alive until its next call).
///
/// # Safety
/// As [`cllm_sgemm`].
unsafe fn rounded_copies([m, n, k]: [usize; 3], lhs: Operand, rhs: Operand) -> (Operand, Operand) {
    ROUNDED.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (a, b) = &mut *bufs;
        let copy = |buf: &mut Vec<f32>, (ptr, rs, cs): Operand, rows: usize, cols: usize| {
            if buf.len() < rows * cols {
                buf.resize(rows * cols, 0.0);
            }
            for i in 0..rows {
                for j in 0..cols {
                    // SAFETY: inside the caller's matrix.
                    let x = unsafe { *ptr.offset(i as isize * rs + j as isize * cs) };
                    buf[i * cols + j] = crate::bf16::round(x);
                }
            }
            (buf.as_ptr(), cols as isize, 1)
        };
        (copy(a, lhs, m, k), copy(b, rhs, k, n))
    })
}

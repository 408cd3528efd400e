//! Matrix products, every one a training step makes: `dst[m×n] (+)= lhs[m×k]·rhs[k×n]`
//! over any strides.
//!
//! - [`sgemm`]: the entry points the JIT calls and the dispatcher — the native packed
//!   GEMM split over the caller's GEMM threads, or the `gemm` crate on CPUs without
//!   AVX2;
//! - [`packed`]: the native packed GEMM (BLIS's loops, AVX-512 12 × 32 and AVX2 6 × 16
//!   micro-kernels chosen at run time, fused bias + GELU epilogue), x86-64 only;
//! - [`cranelift`]: the Cranelift F32X4 GEMM inlined into kernels for `plan.gemm = jit`;
//! - [`matvec`]: one row through a linear layer at memory speed (decoding).
//!
//! - [`epilogue`]: what happens to a product's output after its last block of k (bias,
//!   GELU, GELU's backward), and the second pass that applies it where `packed` does not.
//!
//! Imports run one way: `sgemm` → `packed` → `epilogue`; `cranelift` and `matvec` stand
//! alone.

pub mod cranelift;
pub mod epilogue;
pub mod matvec;
#[cfg(target_arch = "x86_64")]
pub mod packed;
pub mod sgemm;

/// Columns (and k) of one bf16 panel of a right operand packed ahead
/// (`packed::pack_panels`): sizes are rounded up to it.
pub const PANEL: usize = 32;

/// bf16 elements of the panels of a k × n right operand (k and n rounded up to
/// [`PANEL`]): a layout fact the planner sizes its tensors by on any CPU.
pub fn panels_len(k: usize, n: usize) -> usize {
    k.next_multiple_of(PANEL) * n.next_multiple_of(PANEL)
}

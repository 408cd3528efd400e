//! cllm-kernels: every kernel family of a training step, one file each.
//!
//! Each file holds, in order: the math (doc comment), the reference forward and
//! backward (plain loops, storage generic over f32/f64, f64 accumulation), and the
//! Cranelift emitter of the same kernel, specialised to its shapes. `ir.rs` is the
//! kernel IR both back ends consume (`program.rs` the JIT's, `reference.rs` the
//! reference's). This crate knows nothing of specs: `cllm` hands it shapes and buffers.
//!
//! Conventions (llm.c's): `d<name>` is the gradient of `<name>`; every backward
//! *accumulates* (`+=`) into its gradients, so a tensor used twice simply receives
//! two contributions; shapes are named with B, T, C, NH, V, OC, N (= B·T).

// Kernels take many buffers and sizes by design (llm.c's signatures).
#![allow(clippy::too_many_arguments)]

pub mod adamw;
pub mod attention;
pub mod bf16;
pub mod cpu;
pub mod embedding;
pub mod gelu;
pub mod gemm;
pub mod helpers;
pub mod ir;
pub mod jit;
pub mod layernorm;
pub mod matmul;
pub mod program;
pub mod real;
pub mod reference;
pub mod residual;
pub mod rows;
pub mod shard_sum;
pub mod softmax_xent;

pub use bf16::Precision;
pub use real::Real;

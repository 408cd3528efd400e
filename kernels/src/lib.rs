//! cllm-kernels: every kernel family of a training step, one file each.
//!
//! Each file holds, in order: the math (doc comment), the reference forward and
//! backward (plain loops, f32 storage, f64 accumulation), and the Cranelift emitter
//! that JIT-compiles the same kernel specialised to its shapes. This crate knows
//! nothing of specs: `cllm` hands it kernel descriptions and gets back callables.

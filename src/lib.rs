//! cllm: train GPT-style language models on the CPU from a declarative `.cllm` spec.
//!
//! ```text
//!  .cllm text ──pest──▶ Spec ──build──▶ Graph ──plan──▶ Plan ──jit──▶ Program ──runtime──▶ training run
//!                (spec/)        (graph/)        (plan/)   │    (codegen, kernels/)   (runtime/)
//!                                                         └──interp──▶ the same Plan, run by the reference interpreter
//! ```
//!
//! Each stage is one module with one public entry point returning a `Result`; types
//! flow one way and no stage reaches back into an earlier one:
//!
//! | stage | module | entry point |
//! |---|---|---|
//! | spec | [`spec`] | [`spec::load`] / [`spec::parse`] → [`spec::Spec`] |
//! | graph | [`graph`] | [`graph::build`] → [`graph::Graph`] (forward ops + autodiff backward) |
//! | plan | [`plan`] | [`plan::plan`] → [`plan::Plan`] (fusion, keep or recompute, arena, shards) |
//! | machine | [`machine`] | [`machine::Machine`]: the plan's memory; shards on every core, kernels JIT or reference |
//! | runtime | [`runtime`] | [`runtime::train`] → [`runtime::RunSummary`] |
//!
//! Beside them: [`data`] (tokenizers, corpora, the addition task), [`checkpoint`]
//! (safetensors), [`rng`] (the one PRNG), [`console`] (printing that never stops the work).
//!
//! See `docs/ARCHITECTURE.md` for what each module owns.

pub mod checkpoint;
pub mod codegen;
pub mod console;
pub mod data;
pub mod files;
pub mod graph;
pub mod hub;
pub mod lattice;
pub mod machine;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod peak;
pub mod plan;
pub mod plot;
pub mod rng;
pub mod run_folder;
pub mod runtime;
pub mod spec;

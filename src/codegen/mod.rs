//! Stage 4: a [`Plan`] → a [`Program`]: every plan kernel's steps (the kernel IR the
//! plan lowered, `plan::ir`) as a kernel description for `cllm-kernels`, its tensors
//! numbered into one argument table per kernel, plus the optimizer's steps the plan
//! lowered per parameter chunk (`plan::optimizer`), one kernel per distinct shape: the
//! shard-gradient tree sum (which also returns the chunk's Σ g²) and AdamW. All
//! compiled once into one module.
//! `src/` knows nothing of Cranelift: it describes, `cllm-kernels` compiles.

use std::time::Instant;

use cllm_kernels::jit::{Compiled, JitError, JitOptions, KernelFn};

/// How carefully to compile: the verifier and the optimiser. (Whether native
/// full-width kernels are called is the plan's decision, `plan.gemm`.)
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// Run Cranelift's IR verifier on every function.
    pub verify: bool,
    /// Cranelift's `speed` optimiser rather than `none`.
    pub optimize: bool,
}

impl Default for Checks {
    fn default() -> Self {
        let JitOptions {
            verify, optimize, ..
        } = JitOptions::default();
        Checks { verify, optimize }
    }
}
use cllm_kernels::program::{self, KernelDesc, Step};

use crate::graph::TensorId;
use crate::plan::Plan;

/// One compiled plan kernel: its function and the tensors of its argument table.
pub struct CompiledKernel {
    pub function: KernelFn,
    pub args: Vec<TensorId>,
}

/// The compiled plan.
pub struct Program {
    compiled: Compiled,
    /// One per plan kernel, in plan order.
    pub kernels: Vec<CompiledKernel>,
    /// Per parameter chunk: one addition of the gradient tree, `sum += addend`,
    /// returning Σ sum² (args: the two gradient buffers at the chunk).
    pub pair: Vec<KernelFn>,
    /// Per parameter chunk: a group's subtree in one pass (args: its buffers).
    pub group: Vec<KernelFn>,
    /// Per parameter chunk: Σ g² of a gradient buffer at the chunk.
    pub squares: Vec<KernelFn>,
    /// Per parameter chunk: AdamW (args: params, gradient, m, v at the chunk).
    pub adamw: Vec<KernelFn>,
    /// Per weight of a bf16 plan: its panels (args: forward and backward panels, the
    /// weight).
    pub panels: Vec<KernelFn>,
    /// Wall time of translation, compilation and finalisation.
    pub compile_seconds: f64,
}

impl Program {
    /// (kernel name, Cranelift IR) of every function, in order.
    pub fn ir(&self) -> &[(String, String)] {
        &self.compiled.ir
    }

    /// Each function's machine code, in the order of [`Program::ir`].
    pub fn machine_code(&self) -> &[Vec<u8>] {
        &self.compiled.code
    }

    /// Seconds each function took to compile, in the order of [`Program::ir`].
    pub fn kernel_seconds(&self) -> &[f64] {
        &self.compiled.seconds
    }
}

/// Which description serves each parameter chunk.
pub struct ChunkKernels {
    pub pair: Vec<usize>,
    pub group: Vec<usize>,
    pub squares: Vec<usize>,
    pub adamw: Vec<usize>,
    /// Which description serves each of the plan's weight-panel steps.
    pub panels: Vec<usize>,
}

/// The descriptions of every kernel of `plan`, then of the chunk kernels, with the
/// tensors behind each plan kernel's argument slots.
pub fn describe(plan: &Plan) -> (Vec<KernelDesc>, Vec<Vec<TensorId>>, ChunkKernels) {
    let mut descs = Vec::with_capacity(plan.kernels.len() + 2);
    let mut tables = Vec::with_capacity(plan.kernels.len());
    for kernel in &plan.kernels {
        let mut args: Vec<TensorId> = Vec::new();
        let mut slot = |id: TensorId| match args.iter().position(|&a| a == id) {
            Some(i) => i,
            None => {
                args.push(id);
                args.len() - 1
            }
        };
        let steps = (kernel.steps.iter())
            .map(|call| call.clone().map(|_, tensor| slot(tensor)))
            .collect();
        descs.push(KernelDesc {
            name: kernel.name.clone(),
            steps,
        });
        tables.push(args);
    }
    let mut chunk_kernels = ChunkKernels {
        pair: Vec::new(),
        group: Vec::new(),
        squares: Vec::new(),
        adamw: Vec::new(),
        panels: Vec::new(),
    };
    let index_of =
        |descs: &mut Vec<KernelDesc>, desc: KernelDesc| match descs.iter().position(|d| *d == desc)
        {
            Some(i) => i,
            None => {
                descs.push(desc);
                descs.len() - 1
            }
        };
    // One kernel per distinct chunk shape: a chunk step runs alone, its slots numbered
    // in argument order (the table `machine::bind` builds from the same step).
    for chunk in &plan.optimizer {
        let desc = |name: &str, step: &Step<_>| KernelDesc {
            name: name.into(),
            steps: vec![step.clone().numbered()],
        };
        let pair = desc("shard_grad_sum", &chunk.pair);
        chunk_kernels.pair.push(index_of(&mut descs, pair));
        let group = desc("shard_grad_group_sum", &chunk.group);
        chunk_kernels.group.push(index_of(&mut descs, group));
        let squares = desc("shard_grad_squares", &chunk.squares);
        chunk_kernels.squares.push(index_of(&mut descs, squares));
        let adamw = desc("adamw", &chunk.adamw);
        chunk_kernels.adamw.push(index_of(&mut descs, adamw));
    }
    // Likewise one kernel per distinct weight shape for the bf16 panels.
    for step in &plan.panels {
        let desc = KernelDesc {
            name: "weight_panels".into(),
            steps: vec![step.clone().numbered()],
        };
        chunk_kernels.panels.push(index_of(&mut descs, desc));
    }
    (descs, tables, chunk_kernels)
}

/// The JIT's options: `checks`, and native GEMMs unless the plan chose Cranelift's
/// (`plan.gemm`) — for the plan's kernels and the decoder's alike.
pub fn jit_options(gemm: crate::spec::Gemm, checks: Checks) -> JitOptions {
    JitOptions {
        verify: checks.verify,
        optimize: checks.optimize,
        native: gemm == crate::spec::Gemm::Native,
    }
}

/// Compiles every kernel of `plan`.
pub fn compile(plan: &Plan, checks: Checks) -> Result<Program, JitError> {
    let started = Instant::now();
    let (descs, tables, chunk_kernels) = describe(plan);
    let options = jit_options(plan.gemm, checks);
    let compiled = program::compile(&descs, options)?;
    let kernels = tables
        .into_iter()
        .enumerate()
        .map(|(i, args)| CompiledKernel {
            function: compiled.functions[i],
            args,
        })
        .collect();
    let functions = |indices: &[usize]| indices.iter().map(|&i| compiled.functions[i]).collect();
    Ok(Program {
        pair: functions(&chunk_kernels.pair),
        group: functions(&chunk_kernels.group),
        squares: functions(&chunk_kernels.squares),
        adamw: functions(&chunk_kernels.adamw),
        panels: functions(&chunk_kernels.panels),
        kernels,
        compiled,
        compile_seconds: started.elapsed().as_secs_f64(),
    })
}

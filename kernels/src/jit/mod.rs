//! The JIT: one Cranelift module per plan, compiling every kernel specialised to its
//! exact shapes, in the shape of cranelift-jit-demo: [`JitBuilder`] owns the module
//! and the contexts; each kernel family's `emit_*` function translates one kernel
//! through an [`Emitter`]; `finish` defines, finalises and hands back pointers.
//!
//! Every kernel has one signature, `fn(args, scalars) -> f64`: `args` points at the
//! kernel's tensor base pointers (each distinct tensor once, numbered in the order its
//! steps' slots first name it — a step lists what it writes first), `scalars` at
//! its run-time scalars (the loss scale and the first-pass flag, [`LOSS_SCALE`] and
//! [`FIRST_PASS`]; AdamW's learning rate), and the return value
//! is the loss sum of a loss kernel, else 0. Shapes are constants in the code.

mod emitter;
pub(crate) mod math;

use cranelift_codegen::ir::{AbiParam, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

pub use emitter::{Emitter, Lanes, V4};
pub use math::{exp_max_relative_error, tanh_max_abs_error};

/// Index of the loss scale (1 / scored targets) in a kernel's scalars.
pub const LOSS_SCALE: usize = 0;
/// Index of the first-pass flag in a kernel's scalars: 1 in the first pass of a step
/// into a shard's gradient buffer, whose weight gradients the machine left unzeroed
/// for the products that store them (`Step::MatmulBackward`'s `stores_dweight`); 0
/// in any other pass.
pub const FIRST_PASS: usize = 1;
/// How many scalars a shard's pass hands its kernels (AdamW's kernels read their own
/// array).
pub const PASS_SCALARS: usize = 2;

/// A compiled kernel: `args` are the tensors' base pointers, `scalars` run-time scalars.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, scalars: *const f64) -> f64;

#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("this CPU cannot run the JIT: {0}")]
    Host(String),
    #[error("Cranelift rejected kernel `{name}`: {message}")]
    Compile { name: String, message: String },
}

/// Compilation settings.
#[derive(Clone, Copy, Debug)]
pub struct JitOptions {
    /// Run Cranelift's IR verifier on every function (on in debug builds and tests).
    pub verify: bool,
    /// `speed` (the e-graph optimiser) rather than `none`.
    pub optimize: bool,
    /// Native code at the CPU's full width where it exists: products go to the native
    /// GEMM (`sgemm`: AVX-512 or AVX2 micro-kernels chosen at run time) and LayerNorm
    /// forward, GELU and its backward to their native passes; off, all of it is
    /// Cranelift's own 128-bit code (the F32X4 GEMM). `cllm` sets it from the spec's
    /// `plan.gemm = native | jit`.
    pub native: bool,
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            verify: cfg!(debug_assertions),
            optimize: true,
            native: true,
        }
    }
}

/// Builds one module of kernels.
pub struct JitBuilder {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    kernels: Vec<(String, FuncId, String, f64)>,
    /// Machine code of each kernel, for reading the disassembly.
    code: Vec<Vec<u8>>,
    /// Rust helpers the kernels may call (the GEMM, ln), by symbol name.
    imports: Vec<(&'static str, FuncId)>,
    native: bool,
}

/// Rust helpers kernels may call: symbol, address, parameter and return types
/// (`None` is the pointer type).
pub type Helper = (
    &'static str,
    *const u8,
    Vec<Option<types::Type>>,
    Vec<types::Type>,
);

impl JitBuilder {
    /// A builder whose kernels may call `helpers` (the native kernels' symbol table,
    /// [`crate::helpers::all`]: passed in, so that this module imports no family).
    pub fn new(options: JitOptions, helpers: Vec<Helper>) -> Result<JitBuilder, JitError> {
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, key: &str, value: &str| {
            flags
                .set(key, value)
                .map_err(|e| JitError::Host(format!("{key}={value}: {e}")))
        };
        set(
            &mut flags,
            "opt_level",
            if options.optimize { "speed" } else { "none" },
        )?;
        set(
            &mut flags,
            "enable_verifier",
            if options.verify { "true" } else { "false" },
        )?;
        set(&mut flags, "is_pic", "false")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        let isa_builder = cranelift_native::builder().map_err(|e| JitError::Host(e.to_string()))?;
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| JitError::Host(e.to_string()))?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        for &(name, address, _, _) in &helpers {
            builder.symbol(name, address);
        }
        let mut module = JITModule::new(builder);
        let mut imports = Vec::new();
        let ptr = module.target_config().pointer_type();
        for (name, _, params, returns) in helpers {
            let mut sig = module.make_signature();
            sig.params
                .extend(params.into_iter().map(|t| AbiParam::new(t.unwrap_or(ptr))));
            sig.returns.extend(returns.into_iter().map(AbiParam::new));
            let id = module
                .declare_function(name, Linkage::Import, &sig)
                .map_err(|e| JitError::Host(e.to_string()))?;
            imports.push((name, id));
        }
        Ok(JitBuilder {
            ctx: module.make_context(),
            module,
            fctx: FunctionBuilderContext::new(),
            kernels: Vec::new(),
            code: Vec::new(),
            imports,
            native: options.native,
        })
    }

    /// Translates one kernel with `body`; returns its index in the finished module.
    pub fn kernel(
        &mut self,
        name: &str,
        body: impl FnOnce(&mut Emitter<'_>),
    ) -> Result<usize, JitError> {
        let started = std::time::Instant::now();
        let fail = |message: String| JitError::Compile {
            name: name.to_string(),
            message,
        };
        let ptr = self.module.target_config().pointer_type();
        self.module.clear_context(&mut self.ctx);
        self.ctx.func.signature.params.push(AbiParam::new(ptr));
        self.ctx.func.signature.params.push(AbiParam::new(ptr));
        self.ctx
            .func
            .signature
            .returns
            .push(AbiParam::new(types::F64));
        let id = self
            .module
            .declare_function(
                &format!("k{}_{name}", self.kernels.len()),
                Linkage::Local,
                &self.ctx.func.signature,
            )
            .map_err(|e| fail(e.to_string()))?;
        let imports: Vec<(&'static str, ir::FuncRef)> = self
            .imports
            .iter()
            .map(|(symbol, fid)| {
                (
                    *symbol,
                    self.module.declare_func_in_func(*fid, &mut self.ctx.func),
                )
            })
            .collect();
        {
            let config = self.module.target_config();
            let builder = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let mut emitter = Emitter::start(builder, ptr, imports, self.native, &mut self.module);
            body(&mut emitter);
            emitter.finish(config);
        }
        let ir = self.ctx.func.display().to_string();
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| fail(format!("{e:?}")))?;
        let code = self.ctx.compiled_code().map(|c| c.code_buffer().to_vec());
        self.code.push(code.unwrap_or_default());
        self.kernels
            .push((name.to_string(), id, ir, started.elapsed().as_secs_f64()));
        Ok(self.kernels.len() - 1)
    }

    /// Finalises the module: every kernel becomes callable.
    pub fn finish(mut self) -> Result<Compiled, JitError> {
        self.module
            .finalize_definitions()
            .map_err(|e| JitError::Compile {
                name: "module".into(),
                message: e.to_string(),
            })?;
        let functions = self
            .kernels
            .iter()
            .map(|(_, id, _, _)| {
                let code = self.module.get_finalized_function(*id);
                // SAFETY: every kernel was declared with the `KernelFn` signature above.
                unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
            })
            .collect();
        let seconds = self.kernels.iter().map(|k| k.3).collect();
        let ir = self
            .kernels
            .into_iter()
            .map(|(name, _, ir, _)| (name, ir))
            .collect();
        Ok(Compiled {
            _module: self.module,
            functions,
            ir,
            seconds,
            code: self.code,
        })
    }
}

/// A finished module: its kernels' entry points and IR text. The code lives as long
/// as this value.
pub struct Compiled {
    _module: JITModule,
    pub functions: Vec<KernelFn>,
    /// (kernel name, Cranelift IR text), in compilation order.
    pub ir: Vec<(String, String)>,
    /// Seconds each kernel took to translate and compile, in the same order.
    pub seconds: Vec<f64>,
    /// Each kernel's machine code (`objdump -D -b binary -mi386:x86-64 FILE`).
    pub code: Vec<Vec<u8>>,
}

// SAFETY: the module is only kept alive, never touched after `finish`; the finalized
// code is immutable and the kernels share no state, so calling them from any thread
// (on disjoint buffers) is sound.
unsafe impl Send for Compiled {}
unsafe impl Sync for Compiled {}

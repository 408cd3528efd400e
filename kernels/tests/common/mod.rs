//! Helpers shared by the kernel tests: a seeded generator, compiling one kernel,
//! calling it, and the tolerance check every differential test uses.
#![allow(dead_code)]

use cllm_kernels::jit::{Emitter, JitBuilder, JitOptions};

pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) as f32
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.next()).collect()
    }
}

thread_local! {
    /// Whether kernels under test multiply with the native GEMM or the Cranelift one.
    pub static NATIVE_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `test` once with each GEMM back end.
pub fn with_both_gemms(test: impl Fn()) {
    for native in [true, false] {
        NATIVE_GEMM.with(|n| n.set(native));
        eprintln!("-- {} GEMM", if native { "native" } else { "Cranelift" });
        test();
    }
    NATIVE_GEMM.with(|n| n.set(true));
}

/// Compiles one kernel from `body`, which receives the emitter and its argument pointers.
pub fn compile(
    arguments: usize,
    body: impl FnOnce(&mut Emitter<'_>, &[cranelift_codegen::ir::Value]),
) -> cllm_kernels::jit::Compiled {
    let mut jit = JitBuilder::new(
        JitOptions {
            verify: true,
            optimize: true,
            native: NATIVE_GEMM.with(|n| n.get()),
        },
        cllm_kernels::helpers::all(),
    )
    .expect("host ISA");
    jit.kernel("under_test", |e| {
        let args: Vec<_> = (0..arguments).map(|i| e.arg(i)).collect();
        body(e, &args);
    })
    .expect("compiles and verifies");
    jit.finish().expect("finalizes")
}

/// Calls the compiled kernel on the given buffers (as raw pointers) and scalars.
pub fn call(
    compiled: &cllm_kernels::jit::Compiled,
    buffers: &mut [*mut u8],
    scalars: &[f64],
) -> f64 {
    // SAFETY: the buffers are sized for the shapes the kernel was compiled with.
    unsafe { (compiled.functions[0])(buffers.as_ptr(), scalars.as_ptr()) }
}

pub fn ptr<T>(v: &mut [T]) -> *mut u8 {
    v.as_mut_ptr() as *mut u8
}

pub fn assert_close(name: &str, jit: &[f32], reference: &[f32], reduction: usize) {
    assert_eq!(jit.len(), reference.len(), "{name}: lengths");
    let rtol = 1e-6 * (4.0 + reduction as f64 / 8.0);
    let rms = (reference.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()
        / reference.len().max(1) as f64)
        .sqrt();
    let mut worst: f64 = 0.0;
    for (i, (a, b)) in jit.iter().zip(reference).enumerate() {
        let scale = (b.abs() as f64).max(rms).max(1e-30);
        let error = (*a as f64 - *b as f64).abs() / scale;
        worst = worst.max(error);
        assert!(
            error <= rtol,
            "{name}[{i}]: jit {a} vs reference {b} (relative error {error:.2e} > {rtol:.2e})"
        );
    }
    eprintln!("{name:<28} worst relative error {worst:.2e} (allowed {rtol:.2e})");
}

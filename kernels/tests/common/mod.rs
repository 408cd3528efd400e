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
    /// The same stream in f64 (for the gradient checks).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    pub fn vec_f64(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next_f64()).collect()
    }
}

thread_local! {
    /// Whether kernels under test call the native kernels (GEMMs, row passes) or are
    /// Cranelift code throughout (`JitOptions::native`).
    pub static NATIVE_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `test` once with the native kernels and once with Cranelift code only.
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

/// The differential tests' one tolerance: `|jit − ref| ≤ rtol(K)·max(|ref|, rms(ref))`,
/// `rtol(K) = 1e-6·(4 + K/8)` for reduction length K (the JIT sums in f32, four-lane
/// partial sums; the reference in f64; the rms floor keeps results that cancel to near
/// zero from demanding more than f32 has). Prints the worst relative error.
pub fn assert_kernel_matches(name: &str, jit: &[f32], reference: &[f32], reduction: usize) {
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

// ── Gradient checks ─────────────────────────────────────────────────────────
// Every reference backward against central finite differences, in f64.
//
// Each check builds the scalar `L = Σ w ⊙ forward(x)` with random weights `w` (so
// `dout = w`), runs the backward, and compares every input gradient with
// `(L(x + h) − L(x − h)) / 2h`, h = 1e-6. In f64 the finite difference is good to
// ~1e-8, so the tolerance, 1e-6 relative (with an absolute floor of 1e-8), catches any
// wrong term while allowing rounding.

pub const H: f64 = 1e-6;
pub const TOLERANCE: f64 = 1e-6;

/// Compares `analytic` with the central difference of `loss` around `x`, element by element.
pub fn assert_gradient(name: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) {
    let mut worst: f64 = 0.0;
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        probe[i] = x[i] + H;
        let up = loss(&probe);
        probe[i] = x[i] - H;
        let down = loss(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * H);
        let error = (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-2);
        worst = worst.max(error);
        assert!(
            error < TOLERANCE || (numeric - analytic[i]).abs() < 1e-8,
            "{name}[{i}]: analytic {} vs numeric {numeric} (relative error {error:e})",
            analytic[i]
        );
    }
    eprintln!(
        "{name}: worst relative error {worst:e} over {} elements",
        x.len()
    );
}

/// `Σ out ⊙ w`: the scalar loss whose gradient a check compares.
pub fn weighted(out: &[f64], w: &[f64]) -> f64 {
    out.iter().zip(w).map(|(a, b)| a * b).sum()
}

// ── Any step through both back ends ─────────────────────────────────────────

use cllm_kernels::ir::Step;
use cllm_kernels::program::KernelDesc;
use cllm_kernels::reference::{Buf, Scalars, run_step};

/// One slot's buffer: floats, or token ids.
enum Data {
    Floats(Vec<f32>),
    Ids(Vec<u32>),
}

/// Runs `step` — each slot holding the length of its buffer — through both back ends
/// of the kernel IR, the JIT (`program::compile`, dispatching in `emit_step`) and the
/// reference (`reference::run_step`), on the same random buffers (token ids below
/// `ids`), and compares every written slot with [`assert_kernel_matches`] (`reduction`:
/// the longest sum of the step) and the returned values (loss sum, Σ g²) to 1e-5.
/// `scalars` is what both read: the JIT as its scalar array, the reference by name.
pub fn assert_step_matches(
    name: &str,
    step: Step<usize>,
    ids: u32,
    scalars: &Scalars,
    reduction: usize,
    rng: &mut Lcg,
) {
    let mut data: Vec<Data> = Vec::new();
    step.visit(|slot, &len| {
        data.push(match slot.ids {
            true => Data::Ids(
                (0..len)
                    .map(|_| (rng.next().abs() * ids as f32) as u32 % ids)
                    .collect(),
            ),
            // AdamW's second moment and LayerNorm's 1/σ are never negative.
            false if matches!(slot.name, "v" | "rstd") => {
                Data::Floats(rng.vec(len, 1.0).iter().map(|x| x.abs()).collect())
            }
            false => Data::Floats(rng.vec(len, 1.0)),
        })
    });
    let mut reference: Vec<Data> = data
        .iter()
        .map(|d| match d {
            Data::Floats(x) => Data::Floats(x.clone()),
            Data::Ids(x) => Data::Ids(x.clone()),
        })
        .collect();

    let compiled = cllm_kernels::program::compile(
        &[KernelDesc {
            name: name.into(),
            steps: vec![step.clone().numbered()],
        }],
        JitOptions {
            verify: true,
            optimize: true,
            native: NATIVE_GEMM.with(|n| n.get()),
        },
    )
    .expect("compiles and verifies");
    let mut pointers: Vec<*mut u8> = (data.iter_mut())
        .map(|d| match d {
            Data::Floats(x) => ptr(x),
            Data::Ids(x) => ptr(x),
        })
        .collect();
    let jit_scalars: Vec<f64> = match (&step, scalars.adamw) {
        (Step::AdamW { .. }, Some(h)) => h.scalars().as_array().to_vec(),
        _ => {
            let mut pass = vec![0.0; cllm_kernels::jit::PASS_SCALARS];
            pass[cllm_kernels::jit::LOSS_SCALE] = scalars.loss_scale;
            pass[cllm_kernels::jit::FIRST_PASS] = f64::from(u8::from(scalars.first_pass));
            pass
        }
    };
    let jit_returned = call(&compiled, &mut pointers, &jit_scalars);

    let mut buffers = reference.iter_mut();
    let bufs = step
        .clone()
        .map(|slot, _| match buffers.next().expect("one per slot") {
            Data::Ids(x) => Buf::Ids(x),
            Data::Floats(x) => match slot.writes {
                true => Buf::Out(x),
                false => Buf::In(x),
            },
        });
    let reference_returned = run_step(bufs, scalars);

    let mut at = 0;
    step.visit(|slot, _| {
        if let (true, Data::Floats(jit), Data::Floats(want)) =
            (slot.writes, &data[at], &reference[at])
        {
            assert_kernel_matches(&format!("{name}.{}", slot.name), jit, want, reduction);
        }
        at += 1;
    });
    let scale = reference_returned.abs().max(1e-30);
    assert!(
        (jit_returned - reference_returned).abs() <= 1e-5 * scale,
        "{name}: returned {jit_returned} vs reference {reference_returned}"
    );
}

/// A length in `lo..=hi` from the test's stream.
pub fn pick(rng: &mut Lcg, lo: usize, hi: usize) -> usize {
    lo + ((rng.next().abs() * (hi - lo + 1) as f32) as usize).min(hi - lo)
}

/// Runs `check` on three random shapes with each GEMM: the frame of every family's
/// `assert_step_matches` test.
pub fn on_random_shapes(seed: u64, check: impl Fn(&mut Lcg, usize)) {
    with_both_gemms(|| {
        let mut rng = Lcg(seed);
        for round in 0..3 {
            check(&mut rng, round);
        }
    });
}

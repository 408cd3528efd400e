//! A whole training step, JIT against reference, on bench-xs (4 layers, width 128,
//! context 128): the loss and every parameter's gradient. The JIT accumulates in f32
//! where the reference uses f64, and errors compound through the layers, so each
//! gradient tensor must agree to 1e-4 of its own rms, elementwise (measured: ≤ 1.2e-5);
//! the loss to 1e-6.

use std::path::Path;

use cllm::codegen;
use cllm::machine::Machine;
use cllm::plan;
use cllm::rng::Rng;
use cllm::spec;

#[test]
fn a_bench_xs_step_matches_the_reference_in_loss_and_every_gradient() {
    for setting in [
        "plan.gemm=native",
        "plan.gemm=jit",
        "model.attention=lattice(grid(16), radius = 2, window = 16)",
        "model.attention=primes(window = 16)",
    ] {
        eprintln!("-- {setting}");
        check_step(setting);
    }
}

fn check_step(setting: &str) {
    let spec = spec::load(Path::new("specs/bench-xs.cllm"), &[setting.to_string()]).unwrap();
    let plan = plan::plan(&spec).unwrap();
    let program = codegen::compile(
        &plan,
        codegen::Checks {
            verify: true,
            optimize: true,
        },
    )
    .expect("compiles");
    let mut reference = Machine::<f32>::new(plan.clone());
    let mut jit = Machine::<f32>::new(plan.clone());
    jit.attach_jit(program);
    let mut rng = Rng::new(5);
    for i in 0..plan.graph.params.len() {
        let values: Vec<f32> = (0..reference.param(i).len())
            .map(|_| (0.1 * rng.normal()) as f32)
            .collect();
        reference.param_mut(i).copy_from_slice(&values);
        jit.param_mut(i).copy_from_slice(&values);
    }
    let n = plan.graph.dims.batch * plan.graph.dims.t;
    let text = std::fs::read("specs/data/tinyshakespeare.txt").unwrap();
    let tokens: Vec<u32> = text[1000..1000 + n].iter().map(|&b| b as u32).collect();
    let targets: Vec<u32> = text[1001..1001 + n].iter().map(|&b| b as u32).collect();
    let scale = 1.0 / n as f64;
    let mut losses = Vec::new();
    for machine in [&mut reference, &mut jit] {
        machine.zero_param_grads();
        losses.push(machine.forward(&tokens, &targets, scale) * scale);
        machine.backward(scale);
    }
    eprintln!("loss: reference {} JIT {}", losses[0], losses[1]);
    assert!((losses[0] - losses[1]).abs() <= 1e-6 * losses[0].abs());
    for (i, p) in plan.graph.params.iter().enumerate() {
        let (r, j) = (reference.grad(i), jit.grad(i));
        let rms = (r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / r.len() as f64)
            .sqrt()
            .max(1e-30);
        let worst = r
            .iter()
            .zip(j)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .fold(0.0, f64::max)
            / rms;
        eprintln!("{:<28} worst error {worst:.2e} of rms {rms:.2e}", p.name);
        assert!(
            worst <= 1e-4,
            "{}: JIT gradient differs by {worst:.2e} of its rms",
            p.name
        );
    }
}

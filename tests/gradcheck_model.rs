//! The whole model's gradient, end to end: a 2-layer, width-16 GPT run by the
//! interpreter in f64, against central finite differences of its loss. This checks
//! the graph builder and autodiff (wiring, accumulation into shared tensors such as
//! the tied embedding and the residual stream), not only each kernel.

use std::path::Path;

use cllm::machine::Machine;
use cllm::plan::{self, PassOptions, Recompute};
use cllm::rng::Rng;
use cllm::spec;
use cllm_kernels::softmax_xent::IGNORE;

const H: f64 = 1e-5;
/// f64 central differences with h = 1e-5 are good to ~1e-9; analytic and numeric
/// gradients must agree to 1e-6 relative (absolute floor 1e-9).
const TOLERANCE: f64 = 1e-6;

fn tiny_spec(tied: bool) -> spec::Spec {
    let text = format!(
        "cllm 0.1\n\
         data {{ source = text(\"data/tinyshakespeare.txt\") }}\n\
         model gpt {{ context = 6 tokens  width = 16  layers = 2  heads = 2  tied_head = {tied} }}\n\
         train {{ batch = 2 seqs }}\n\
         plan {{ shards = 1 }}\n"
    );
    spec::parse(&text, "tiny", Path::new("specs"), &[]).expect("tiny spec is valid")
}

fn check_model(tied: bool, options: PassOptions) {
    let spec = tiny_spec(tied);
    let mut machine = Machine::<f64>::new(plan::plan_with(&spec, options).expect("plans"));
    let mut rng = Rng::new(42);
    for i in 0..machine.graph().params.len() {
        // Random values everywhere (not the real init) so no term is trivially zero.
        for x in machine.param_mut(i) {
            *x = 0.3 * rng.normal();
        }
    }
    let n = 2 * 6;
    let tokens: Vec<u32> = (0..n).map(|_| rng.below(256) as u32).collect();
    let mut targets: Vec<u32> = (0..n).map(|_| rng.below(256) as u32).collect();
    targets[3] = IGNORE;
    let scale = 1.0 / (n - 1) as f64;

    machine.zero_param_grads();
    machine.forward(&tokens, &targets, scale);
    machine.backward(scale);
    let analytic: Vec<Vec<f64>> = (0..machine.graph().params.len())
        .map(|i| machine.grad(i).to_vec())
        .collect();

    let mut checked = 0;
    for (i, param) in machine.graph().params.clone().iter().enumerate() {
        let len = analytic[i].len();
        // Every element of small tensors; a spread of 12 elements of large ones.
        let picks: Vec<usize> = if len <= 16 {
            (0..len).collect()
        } else {
            (0..12).map(|k| (k * 7919) % len).collect()
        };
        let mut worst: f64 = 0.0;
        for j in picks {
            let original = machine.param(i)[j];
            machine.param_mut(i)[j] = original + H;
            let up = scale * machine.forward(&tokens, &targets, scale);
            machine.param_mut(i)[j] = original - H;
            let down = scale * machine.forward(&tokens, &targets, scale);
            machine.param_mut(i)[j] = original;
            let numeric = (up - down) / (2.0 * H);
            let a = analytic[i][j];
            let error = (numeric - a).abs() / numeric.abs().max(a.abs()).max(1e-3);
            worst = worst.max(error);
            assert!(
                error < TOLERANCE || (numeric - a).abs() < 1e-9,
                "{}[{j}]: analytic {a} vs numeric {numeric} (relative error {error:e})",
                param.name
            );
            checked += 1;
        }
        eprintln!("{:<28} worst relative error {worst:.1e}", param.name);
    }
    assert!(checked > 200);
}

#[test]
fn tied_model_gradient_matches_finite_differences() {
    check_model(true, PassOptions::default());
}

#[test]
fn untied_model_gradient_matches_finite_differences() {
    check_model(false, PassOptions::default());
}

#[test]
fn gradient_is_right_unfused_and_with_everything_recomputed() {
    check_model(
        true,
        PassOptions {
            fuse: false,
            recompute: Recompute::Never,
        },
    );
    check_model(
        true,
        PassOptions {
            fuse: true,
            recompute: Recompute::All,
        },
    );
}

/// The gradient of the model in bf16 mode (every product's operands rounded to bf16)
/// against central differences of the exact (f64, unrounded) loss: the bf16 gradient is
/// the exact one up to the rounding of the products on its path. Each rounded operand
/// is off by at most 2⁻⁸ relative, so each product by ≤ 2⁻⁷, and the gradient of this
/// 2-layer model passes ~10 products, whose errors have random signs: each parameter
/// tensor's gradient must agree to 2⁻⁴ (6%) in relative L2 norm — loose enough for
/// bf16, tight enough that a wrong term (or a missing one: 100%) fails. The fp32 tests
/// above hold the exact wiring to 1e-6.
#[test]
fn bf16_model_gradient_matches_finite_differences_of_the_exact_loss() {
    let mut bf16_spec = tiny_spec(true);
    bf16_spec.train.precision = cllm_kernels::Precision::Bf16;
    let exact_spec = tiny_spec(true);
    let mut bf16 = Machine::<f64>::new(plan::plan(&bf16_spec).expect("plans"));
    let mut exact = Machine::<f64>::new(plan::plan(&exact_spec).expect("plans"));
    let mut rng = Rng::new(7);
    for i in 0..exact.graph().params.len() {
        for (a, b) in exact.param_mut(i).iter_mut().zip(bf16.param_mut(i)) {
            *a = 0.3 * rng.normal();
            *b = *a;
        }
    }
    let n = 2 * 6;
    let tokens: Vec<u32> = (0..n).map(|_| rng.below(256) as u32).collect();
    let targets: Vec<u32> = (0..n).map(|_| rng.below(256) as u32).collect();
    let scale = 1.0 / n as f64;
    bf16.zero_param_grads();
    bf16.forward(&tokens, &targets, scale);
    bf16.backward(scale);
    let mut worst: f64 = 0.0;
    for (i, param) in exact.graph().params.clone().iter().enumerate() {
        let analytic = bf16.grad(i).to_vec();
        let len = analytic.len();
        let picks: Vec<usize> = (0..len.min(24)).map(|k| (k * 7919) % len).collect();
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for j in picks {
            let original = exact.param(i)[j];
            exact.param_mut(i)[j] = original + H;
            let up = scale * exact.forward(&tokens, &targets, scale);
            exact.param_mut(i)[j] = original - H;
            let down = scale * exact.forward(&tokens, &targets, scale);
            exact.param_mut(i)[j] = original;
            let numeric = (up - down) / (2.0 * H);
            diff += (analytic[j] - numeric).powi(2);
            norm += numeric.powi(2);
        }
        let relative = (diff / norm.max(1e-30)).sqrt();
        eprintln!("{:<28} bf16 relative L2 error {relative:.1e}", param.name);
        assert!(
            relative < 2f64.powi(-4) || norm.sqrt() < 1e-9,
            "{}: bf16 gradient off by {relative:e} (relative L2)",
            param.name
        );
        worst = worst.max(relative);
    }
    // The rounding is there: the bf16 gradient is not the exact one.
    assert!(worst > 1e-6, "bf16 mode gave the exact gradient");
}

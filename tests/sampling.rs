//! The key/value-cache sampler computes exactly what a whole forward pass computes,
//! one position at a time, and the token pickers honour temperature, top-k and top-p.

use std::path::Path;

use cllm::machine::Machine;
use cllm::plan;
use cllm::rng::Rng;
use cllm::runtime::sampler::{Sampler, Sampling, pick};
use cllm::spec;

#[test]
fn cached_decoding_matches_the_full_forward_at_every_position() {
    for attention in [
        "dense",
        "window(4)",
        "strided(3, 2)",
        "primes(window = 2)",
        "lattice(grid(4), radius = 1, window = 2)",
        "lattice(ulam, radius = 1.5, window = 1)",
    ] {
        cached_decoding_matches(attention, "fp32");
    }
}

/// In bf16 both paths round every linear layer's operands to bf16, but their fp32
/// activations may differ in the last bit (other summation orders), and a value that
/// sits on a bf16 rounding boundary then rounds one bf16 unit (2⁻⁸ relative) apart: the
/// logits (|logit| ≲ 1 here) agree to 2⁻⁸ rather than fp32's 1e-5.
#[test]
fn cached_decoding_matches_the_full_forward_in_bf16() {
    for attention in ["dense", "window(4)"] {
        cached_decoding_matches(attention, "bf16");
    }
}

fn cached_decoding_matches(attention: &str, precision: &str) {
    let text = format!(
        "cllm 0.1\ndata {{ source = text(\"data/tinyshakespeare.txt\") }}\n\
         model gpt {{ context = 12 tokens  width = 24  layers = 2  heads = 3  attention = {attention} }}\n\
         train {{ batch = 1 seqs  precision = {precision} }}\nplan {{ shards = 1 }}"
    );
    let tolerance = if precision == "bf16" {
        2f32.powi(-8)
    } else {
        1e-5
    };
    let spec = spec::parse(&text, "kv", Path::new("specs"), &[]).unwrap();
    let plan = plan::plan(&spec).unwrap();
    let graph = plan.graph.clone();
    let mut machine = Machine::<f32>::new(plan);
    let mut rng = Rng::new(3);
    for i in 0..graph.params.len() {
        for x in machine.param_mut(i) {
            *x = (0.2 * rng.normal()) as f32;
        }
    }
    let tokens: Vec<u32> = b"To be, or no".iter().map(|&b| b as u32).collect();
    machine.forward(&tokens, &tokens, 1.0);
    let full = machine.tensor(graph.logits).to_vec();

    let params = (0..graph.params.len()).map(|i| machine.param(i)).collect();
    let mask = machine.plan().pattern.as_ref().map(|p| p.mask());
    let mut sampler = Sampler::new(&graph, machine.plan().arithmetic(), params)
        .unwrap()
        .with_mask(mask);
    let v = graph.dims.vocab;
    for (t, &token) in tokens.iter().enumerate() {
        let cached = sampler.feed(token).to_vec();
        let worst = cached
            .iter()
            .zip(&full[t * v..(t + 1) * v])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < tolerance,
            "{attention} in {precision}, position {t}: cached logits differ by {worst}"
        );
        if precision == "bf16" {
            eprintln!("{attention} bf16 position {t}: worst {worst:.2e}");
        }
    }
}

#[test]
fn pickers_honour_their_settings() {
    let logits = [0.1f32, 2.0, 1.9, -1.0, 0.0];
    let mut rng = Rng::new(1);
    assert_eq!(pick(&logits, Sampling::GREEDY, &mut rng), 1);
    let top1 = Sampling {
        temperature: 1.0,
        top_k: Some(1),
        top_p: 1.0,
    };
    assert!((0..100).all(|_| pick(&logits, top1, &mut rng) == 1));
    let nucleus = Sampling {
        temperature: 1.0,
        top_k: None,
        top_p: 0.3,
    };
    assert!((0..100).all(|_| pick(&logits, nucleus, &mut rng) == 1));
    let top2 = Sampling {
        temperature: 1.0,
        top_k: Some(2),
        top_p: 1.0,
    };
    let draws: Vec<u32> = (0..400).map(|_| pick(&logits, top2, &mut rng)).collect();
    assert!(draws.iter().all(|&t| t == 1 || t == 2) && draws.contains(&1) && draws.contains(&2));
    let hot = Sampling {
        temperature: 100.0,
        top_k: None,
        top_p: 1.0,
    };
    let draws: Vec<u32> = (0..2000).map(|_| pick(&logits, hot, &mut rng)).collect();
    assert!(
        (0..5).all(|t| draws.contains(&t)),
        "a high temperature reaches every token"
    );
}

//! `cllm export RUN_DIR --hf DIR`: the files Hugging Face's `GPT2LMHeadModel` loads —
//! GPT-2's names and Conv1D layout, a config that matches the model — and cllm's own
//! GPT-2 import reads them back into the run's parameters bit for bit.

mod common;
use common::cllm;

use std::path::Path;

use cllm::checkpoint::{self, FILE_NAME};
use cllm::graph;
use cllm::runtime::sampler::{Sampler, Sampling};
use cllm::spec;

/// Trains `specs/add.cllm` for 20 steps with `sets` into `dir`/run.
fn train(dir: &Path, sets: &[&str]) -> std::path::PathBuf {
    let run = dir.join("run");
    let mut args = vec!["run", "specs/add.cllm", "--steps", "20", "--out"];
    args.push(run.to_str().unwrap());
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = cllm(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

#[test]
fn exported_files_have_gpt2s_layout_and_read_back_bit_for_bit() {
    for tied in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let run = train(dir.path(), &[&format!("model.tied_head={tied}")]);
        let hf = dir.path().join("hf");
        let out = cllm(&[
            "export",
            run.to_str().unwrap(),
            "--hf",
            hf.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut stored = checkpoint::load(&run.join(FILE_NAME)).unwrap();
        let spec: spec::Spec = serde_json::from_str(&stored.metadata["spec_json"]).unwrap();
        let graph = graph::build(&spec, 1);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
        let m = &spec.model;
        for (key, want) in [
            ("vocab_size", m.vocab_size()),
            ("n_positions", m.context),
            ("n_embd", m.width),
            ("n_layer", m.layers),
            ("n_head", m.heads),
            ("n_inner", m.mlp_width()),
        ] {
            assert_eq!(config[key], want, "config.json `{key}`");
        }
        assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
        assert_eq!(config["activation_function"], "gelu_new");
        assert_eq!(config["tie_word_embeddings"], tied);

        let exported = checkpoint::load(&hf.join("model.safetensors")).unwrap();
        assert_eq!(exported.metadata["format"], "pt", "transformers checks it");
        let names = &exported.tensors;
        let c = m.width as usize;
        assert_eq!(names["transformer.wte.weight"].0, [256, c]);
        assert_eq!(
            names["transformer.h.0.attn.c_attn.weight"].0,
            [c, 3 * c],
            "Conv1D"
        );
        assert_eq!(
            names["transformer.h.1.mlp.c_proj.weight"].0,
            [4 * c, c],
            "Conv1D"
        );
        assert_eq!(names["transformer.ln_f.bias"].0, [c]);
        assert_eq!(names.contains_key("lm_head.weight"), !tied);
        assert_eq!(names.len(), graph.params.len());

        let shapes: Vec<(String, Vec<usize>)> = (graph.params.iter())
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect();
        let imported = checkpoint::import_gpt2(&hf.join("model.safetensors"), &shapes).unwrap();
        let mut original = Vec::new();
        for (p, back) in graph.params.iter().zip(&imported) {
            let values = stored.take(Path::new("run"), &p.name, &p.shape).unwrap();
            let same = values
                .iter()
                .zip(back)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && values.len() == back.len(), "{} differs", p.name);
            original.push(values);
        }
        // The forward pass through each gives the same logits.
        let logits = |params: &[Vec<f32>]| {
            let mut sampler = Sampler::new(
                &graph,
                (spec.plan.gemm, spec.train.precision),
                params.iter().map(Vec::as_slice).collect(),
            )
            .unwrap();
            let mut rng = cllm::rng::Rng::new(1);
            let out = sampler.generate(
                b"123+456=".map(u32::from).as_slice(),
                5,
                Sampling::GREEDY,
                &mut rng,
                |_| false,
            );
            (out, sampler.feed(b'7' as u32).to_vec())
        };
        let (a, b) = (logits(&original), logits(&imported));
        assert_eq!(a.0, b.0);
        assert!(
            a.1.iter()
                .zip(&b.1)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }
}

#[test]
fn a_sparse_attention_run_is_not_exported_as_dense_gpt2() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), &["model.attention=window(8)"]);
    let hf = dir.path().join("hf");
    let out = cllm(&[
        "export",
        run.to_str().unwrap(),
        "--hf",
        hf.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("window"), "{stderr}");
    assert!(!hf.join("model.safetensors").exists());
}

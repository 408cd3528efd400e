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

/// An export carries its tokenizer: GPT-2's `vocab.json` + `merges.txt` (+ configs)
/// for `vocab = gpt2`, a byte-level `tokenizer.json` for `vocab = bytes`. The files are
/// checked against their formats always, and — where Python has `transformers` — loaded
/// with `AutoTokenizer`, whose ids must be cllm's on text with accents, CJK, emoji and
/// whitespace runs (skipped, saying so, where it is not installed).
#[test]
fn exports_carry_their_tokenizer() {
    let texts = [
        "ROMEO: Hello world",
        "café 東京 🤖",
        "a  \n\n  b\t!",
        " the end",
    ];
    for vocab in ["gpt2", "bytes"] {
        let text = format!(
            "cllm 0.1\ndata {{ source = text(\"data/tinyshakespeare.txt\") }}\n\
             model gpt {{ vocab = {vocab}  context = 16 tokens  width = 8  layers = 1  heads = 2 }}\n"
        );
        let spec = spec::parse(&text, "t", Path::new("specs"), &[]).unwrap();
        let files = checkpoint::hf_tokenizer::files(&spec);
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in &files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let json = |name: &str| -> serde_json::Value {
            let (_, text) = files.iter().find(|(n, _)| *n == name).expect(name);
            serde_json::from_str(text).unwrap()
        };
        let tokenizer = match vocab {
            "gpt2" => {
                assert_eq!(json("vocab.json").as_object().unwrap().len(), 50_257);
                let (_, merges) = files.iter().find(|(n, _)| *n == "merges.txt").unwrap();
                assert!(merges.starts_with("#version: 0.2\nĠ t\n"));
                assert_eq!(json("generation_config.json")["eos_token_id"], 50_256);
                cllm::data::Tokenizer::Gpt2
            }
            _ => {
                assert_eq!(
                    json("tokenizer.json")["model"]["vocab"]
                        .as_object()
                        .unwrap()
                        .len(),
                    256
                );
                cllm::data::Tokenizer::Bytes
            }
        };
        let script = "import json, sys\nfrom transformers import AutoTokenizer\n\
             t = AutoTokenizer.from_pretrained(sys.argv[1])\n\
             print(json.dumps([t.encode(s) for s in json.loads(sys.argv[2])]))\n";
        let run = std::process::Command::new("python3")
            .args(["-c", script, dir.path().to_str().unwrap()])
            .arg(serde_json::to_string(&texts).unwrap())
            .output();
        match run {
            Ok(out) if out.status.success() => {
                let theirs: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
                for (text, ids) in texts.iter().zip(theirs) {
                    assert_eq!(ids, tokenizer.encode(text.as_bytes()), "{vocab}: {text:?}");
                }
            }
            _ => eprintln!(
                "skipped: python3 with `transformers` is not installed here; the {vocab} \
                 tokenizer files were checked against their format only"
            ),
        }
    }
}

/// A `words` vocabulary (cllm's own) is exported as its word list and rule,
/// `cllm_words.json`, from which the ids can be rebuilt without cllm.
#[test]
fn a_word_vocabulary_is_exported_as_its_list_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize("specs/data/tinyshakespeare.txt").unwrap();
    let spec_file = dir.path().join("words.cllm");
    std::fs::write(
        &spec_file,
        format!(
            "cllm 0.1\ndata {{ source = text(\"{}\") }}\n\
             model gpt {{ vocab = words(size = 300)  context = 8 tokens  width = 8  layers = 1  heads = 2 }}\n\
             train {{ steps = 2  batch = 1 seqs }}\n",
            data.display()
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    let out = cllm(&[
        "run",
        spec_file.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("cllm_words.json")).unwrap()).unwrap();
    let words: Vec<String> = serde_json::from_value(file["words"].clone()).unwrap();
    assert_eq!(words.len(), 300 - 256);
    assert_eq!(file["vocab_size"], 300);
    let stored = checkpoint::load(&run.join(FILE_NAME)).unwrap();
    let listed: Vec<String> = serde_json::from_str(&stored.metadata["words"]).unwrap();
    assert_eq!(words, listed);

    // The rule, re-implemented from the file's words alone, gives cllm's ids.
    let text = b"ROMEO: the king, my lord!  And thou art";
    let mut ids = Vec::new();
    let mut rest = &text[..];
    while let Some(&first) = rest.first() {
        let letters = first.is_ascii_alphabetic();
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphabetic() == letters)
            .count();
        let run = &rest[..len];
        match words.iter().position(|w| w.as_bytes() == run) {
            Some(i) if letters => ids.push(256 + i as u32),
            _ => ids.extend(run.iter().map(|&b| b as u32)),
        }
        rest = &rest[len..];
    }
    assert!(ids.iter().any(|&id| id >= 256), "some words are listed");
    assert_eq!(ids, cllm::data::Tokenizer::from_words(words).encode(text));
}

#[test]
fn a_folder_another_export_is_writing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), &["train.steps=2"]);
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    let args = [
        "export",
        run.to_str().unwrap(),
        "--hf",
        hf.to_str().unwrap(),
    ];
    // Two at once left one model's weights beside the other's config.json, both
    // exiting 0. An export locks the folder itself (flock): hold it here.
    let held = std::fs::File::open(&hf).unwrap();
    held.lock().unwrap();
    let second = cllm(&args);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another `cllm export`"), "{stderr}");
    assert_eq!(std::fs::read_dir(&hf).unwrap().count(), 0);
    drop(held);
    // What an export killed mid-write left goes; a file of the user's own stays.
    let (left, foreign) = (".model.safetensors.tmp.4242.0", ".notes.txt.tmp.4242.0");
    for name in [left, foreign] {
        std::fs::write(hf.join(name), b"x").unwrap();
    }
    let first = cllm(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(!hf.join(left).exists() && hf.join(foreign).exists());
}

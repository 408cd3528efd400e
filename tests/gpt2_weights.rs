//! Initial weights from a GPT-2 safetensors file: names with or without
//! `transformer.`, Conv1D matrices transposed into our (out, in) layout (nanoGPT's
//! `nn.Linear` layout recognised and not), F16/BF16/F64 tensors converted, a tied file
//! into an untied model, and a clear error naming any tensor whose shape does not fit
//! the spec; and sampling stops at GPT-2's end of text.

use std::collections::HashMap;
use std::path::Path;

mod common;
use common::cllm;

use cllm::checkpoint::{self, CheckpointError};
use cllm::graph;
use cllm::rng::Rng;
use cllm::spec;
use safetensors::{Dtype, tensor::TensorView};

const C: usize = 8;

fn spec_text() -> String {
    spec_with("")
}

/// The test model, with `extra` keys in its model block.
fn spec_with(extra: &str) -> String {
    format!(
        "cllm 0.1\ndata {{ source = text(\"data/tinyshakespeare.txt\") }}\n\
         model gpt {{ context = 4 tokens  width = {C}  layers = 1  heads = 2 {extra} }}\n\
         train {{ batch = 1 seqs }}\n"
    )
}

/// Writes a GPT-2-layout file: (name, shape) → values, HF names under `prefix`.
fn write_gpt2(path: &Path, prefix: &str, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    write_gpt2_as(path, prefix, tensors, Dtype::F32)
}

/// The same, each float tensor stored as `dtype` (F32, F16, BF16 or F64).
fn write_gpt2_as(
    path: &Path,
    prefix: &str,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: Dtype,
) {
    let encode = |x: &f32| -> Vec<u8> {
        match dtype {
            Dtype::F16 => half::f16::from_f32(*x).to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f32(*x).to_le_bytes().to_vec(),
            Dtype::F64 => (*x as f64).to_le_bytes().to_vec(),
            _ => x.to_le_bytes().to_vec(),
        }
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(encode).collect())
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                format!("{prefix}{name}"),
                TensorView::new(dtype, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    let mask = vec![1u8; 16];
    views.push((
        format!("{prefix}h.0.attn.bias"),
        TensorView::new(Dtype::U8, vec![4, 4], &mask).unwrap(),
    ));
    std::fs::write(
        path,
        safetensors::serialize(views, None::<HashMap<String, String>>).unwrap(),
    )
    .unwrap();
}

/// Trains the test model `text` (a GPT-2 vocabulary) for `steps` steps from the weights
/// in `file`, on the repository's tinyshakespeare, into `dir`/run; returns the run.
fn train_from(dir: &Path, text: &str, file: &Path, steps: u64) -> std::path::PathBuf {
    let spec_file = dir.join("from_weights.cllm");
    let specs = std::fs::canonicalize("specs").unwrap();
    let with_paths = text
        .replace("data/", &format!("{}/data/", specs.display()))
        .replace(
            "vocab = gpt2",
            &format!("vocab = gpt2  weights = \"{}\"", file.display()),
        )
        .replace(
            "batch = 1 seqs",
            &format!("batch = 1 seqs  steps = {steps}"),
        );
    std::fs::write(&spec_file, with_paths).unwrap();
    let run_dir = dir.join("run");
    let run = cllm(&[
        "run",
        spec_file.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run_dir
}

/// GPT-2's tensors for our model, with random values; Conv1D weights as (in, out).
fn gpt2_tensors(position_rows: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    gpt2_tensors_for(&spec_text(), position_rows)
}

fn gpt2_tensors_for(text: &str, position_rows: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let spec = spec::parse(text, "t", Path::new("specs"), &[]).unwrap();
    let graph = graph::build(&spec, 1);
    let mut rng = Rng::new(9);
    graph
        .params
        .iter()
        .map(|p| {
            let mut shape = p.shape.clone();
            let conv1d = ["c_attn.weight", "c_proj.weight", "c_fc.weight"]
                .iter()
                .any(|s| p.name.ends_with(s));
            if conv1d {
                shape.reverse();
            }
            let name = match p.name.as_str() {
                "wte" | "wpe" => format!("{}.weight", p.name),
                other => other.to_string(),
            };
            if p.name == "wpe" {
                shape[0] = position_rows;
            }
            let n = shape.iter().product();
            (name, shape, (0..n).map(|_| rng.normal() as f32).collect())
        })
        .collect()
}

#[test]
fn gpt2_layout_is_read_and_transposed() {
    let spec = spec::parse(&spec_text(), "t", Path::new("specs"), &[]).unwrap();
    let graph = graph::build(&spec, 1);
    let shapes: Vec<(String, Vec<usize>)> = graph
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    let tensors = gpt2_tensors(16); // GPT-2 has more positions than our context: cut
    for prefix in ["", "transformer."] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gpt2.safetensors");
        write_gpt2(&file, prefix, &tensors);
        let imported = checkpoint::import_gpt2(&file, &shapes).expect("imports");
        let c_attn = graph.param_index("h.0.attn.c_attn.weight").unwrap();
        let source = &tensors
            .iter()
            .find(|t| t.0 == "h.0.attn.c_attn.weight")
            .unwrap()
            .2; // (C, 3C)
        for i in 0..C {
            for o in 0..3 * C {
                assert_eq!(imported[c_attn][o * C + i], source[i * 3 * C + o]);
            }
        }
        let wpe = graph.param_index("wpe").unwrap();
        assert_eq!(imported[wpe], tensors[1].2[..4 * C]);
    }
}

#[test]
fn a_misshapen_tensor_is_named_in_the_error() {
    let spec = spec::parse(&spec_text(), "t", Path::new("specs"), &[]).unwrap();
    let graph = graph::build(&spec, 1);
    let shapes: Vec<(String, Vec<usize>)> = graph
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    let mut tensors = gpt2_tensors(4);
    let ln = tensors.iter_mut().find(|t| t.0 == "h.0.ln_2.bias").unwrap();
    ln.1 = vec![C + 1];
    ln.2.push(0.0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpt2.safetensors");
    write_gpt2(&file, "", &tensors);
    match checkpoint::import_gpt2(&file, &shapes) {
        Err(CheckpointError::Shape {
            name,
            expected,
            found,
            ..
        }) => {
            assert_eq!(name, "h.0.ln_2.bias");
            assert_eq!((expected, found), (vec![C], vec![C + 1]));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

/// A checkpoint of cllm's own is read in its own layout (no Conv1D transposes):
/// `model.weights` pointing at a run's checkpoint starts from exactly its parameters.
#[test]
fn a_runs_own_checkpoint_is_a_starting_point() {
    let root = tempfile::tempdir().unwrap();
    let (first, second) = (root.path().join("first"), root.path().join("second"));
    let run = |dir: &Path, extra: &[String]| {
        let mut args: Vec<String> = ["run", "specs/add.cllm", "--quiet", "--out"]
            .map(String::from)
            .to_vec();
        args.push(dir.display().to_string());
        args.extend(
            [
                "--set",
                "data.source=addition(digits = 2, held_out = 20)",
                "--steps",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().cloned());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cllm"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&first, &["10".into()]);
    let weights = first.join("checkpoint.safetensors");
    // One step at a learning rate of 1e-20 moves no weight by more than ~1e-20.
    run(
        &second,
        &[
            "1".into(),
            "--set".into(),
            format!("model.weights=\"{}\"", weights.display()),
            "--set".into(),
            "train.optimizer=adamw(lr = 1e-20)".into(),
            "--set".into(),
            "train.schedule=constant(warmup = 0 steps)".into(),
        ],
    );
    let (a, b) = (
        checkpoint::load(&weights).unwrap(),
        checkpoint::load(&second.join("checkpoint.safetensors")).unwrap(),
    );
    let c_attn = "h.0.attn.c_attn.weight";
    for (name, (shape, values)) in &a.tensors {
        if name.starts_with("adamw.") {
            continue;
        }
        let (found, got) = &b.tensors[name];
        assert_eq!(found, shape, "{name}");
        let worst = values
            .iter()
            .zip(got)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-12, "{name} moved by {worst}");
    }
    assert!(
        a.tensors.contains_key(c_attn),
        "a Conv1D-named matrix was compared"
    );
}

/// GPT-2's real vocabulary: a GPT-2-layout file with 50 257 token rows (made here,
/// random) is imported under `model.vocab = gpt2`, trained on for two steps and sampled
/// from, with multi-byte text in and out as UTF-8.
#[test]
fn a_gpt2_vocabulary_file_trains_and_samples() {
    let text = spec_with("vocab = gpt2");
    let tensors = gpt2_tensors_for(&text, 1024);
    let wte = &tensors.iter().find(|t| t.0 == "wte.weight").unwrap();
    assert_eq!(wte.1, [50_257, C]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpt2.safetensors");
    write_gpt2(&file, "transformer.", &tensors);

    let spec = spec::parse(&text, "t", Path::new("specs"), &[]).unwrap();
    let graph = graph::build(&spec, 1);
    let shapes: Vec<(String, Vec<usize>)> = graph
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    let imported = checkpoint::import_gpt2(&file, &shapes).expect("imports");
    assert_eq!(imported[graph.param_index("wte").unwrap()], wte.2);

    let run_dir = train_from(dir.path(), &text, &file, 2);
    let sample = cllm(&[
        "sample",
        run_dir.to_str().unwrap(),
        "--prompt",
        "Héllo, 東京",
        "--tokens",
        "8",
    ]);
    assert!(
        sample.status.success(),
        "{}",
        String::from_utf8_lossy(&sample.stderr)
    );
    let out = String::from_utf8(sample.stdout).expect("GPT-2 samples are decoded as UTF-8");
    assert!(out.starts_with("Héllo, 東京"), "{out}");
}

/// An untied output head (`lm_head.weight` unlike `wte`) loads under `tied_head =
/// false`, and is refused, not silently dropped, by a tied model.
#[test]
fn an_untied_head_needs_an_untied_model() {
    let untied = spec_with("tied_head = false");
    let tensors = gpt2_tensors_for(&untied, 4);
    assert!(tensors.iter().any(|t| t.0 == "lm_head.weight"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpt2.safetensors");
    write_gpt2(&file, "", &tensors);
    let shapes = shapes_of;
    let imported = checkpoint::import_gpt2(&file, &shapes(&untied)).expect("untied imports");
    let head = &tensors.iter().find(|t| t.0 == "lm_head.weight").unwrap().2;
    assert!(imported.contains(head));
    match checkpoint::import_gpt2(&file, &shapes(&spec_text())) {
        Err(error @ CheckpointError::Unfit { .. }) => {
            // A readable file is never called unreadable.
            let message = error.to_string();
            assert!(message.contains("tied_head = false"), "{message}");
            assert!(
                message.contains("is a readable safetensors file, but"),
                "{message}"
            );
        }
        other => panic!("a tied model took an untied head: {other:?}"),
    }
}

/// `cllm sample` stops at GPT-2's end of text (50256), as Hugging Face's `generate`
/// does, and `--no-stop` goes on past it. The model is made to say nothing else: the
/// final LayerNorm's weight 0 and bias e₀ make every position's output e₀, so the
/// logits are wte's column 0, which is 100 for token 50256 and normal elsewhere.
#[test]
fn sampling_stops_at_the_end_of_text() {
    let text = spec_with("vocab = gpt2");
    let mut tensors = gpt2_tensors_for(&text, 1024);
    for (name, shape, values) in tensors.iter_mut() {
        match name.as_str() {
            "ln_f.weight" => values.fill(0.0),
            "ln_f.bias" => {
                values.fill(0.0);
                values[0] = 1.0;
            }
            "wte.weight" => values[50_256 * shape[1]] = 100.0,
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpt2.safetensors");
    write_gpt2(&file, "", &tensors);
    let run_dir = train_from(dir.path(), &text, &file, 1);
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", run_dir.to_str().unwrap(), "--prompt", "Hello"];
        args.extend(["--tokens", "3", "--temperature", "0"]);
        args.extend(extra);
        let out = cllm(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (stopped, note) = sample(&[]);
    assert_eq!(stopped, "Hello\n", "{note}");
    assert!(
        note.contains("the end of the text after 0 token(s)"),
        "{note}"
    );
    let (went_on, _) = sample(&["--no-stop"]);
    assert_eq!(went_on, "Hello<|endoftext|><|endoftext|><|endoftext|>\n");
}

/// F16, BF16 and F64 files — what most downloaded checkpoints are — load into the fp32
/// master weights, each value the f32 its stored value converts to exactly.
#[test]
fn half_bfloat_and_double_files_load() {
    let tensors = gpt2_tensors(16);
    let shapes = shapes_of(&spec_text());
    let dir = tempfile::tempdir().unwrap();
    let f32_file = dir.path().join("f32.safetensors");
    write_gpt2(&f32_file, "", &tensors);
    let exact = checkpoint::import_gpt2(&f32_file, &shapes).unwrap();
    type Round = fn(f32) -> f32;
    let cases: [(Dtype, Round); 3] = [
        (Dtype::F16, |x| half::f16::from_f32(x).to_f32()),
        (Dtype::BF16, |x| half::bf16::from_f32(x).to_f32()),
        (Dtype::F64, |x| x),
    ];
    for (dtype, round) in cases {
        let file = dir.path().join(format!("{dtype:?}.safetensors"));
        write_gpt2_as(&file, "transformer.", &tensors, dtype);
        let imported =
            checkpoint::import_gpt2(&file, &shapes).unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
        for (got, want) in imported.iter().zip(&exact) {
            let want: Vec<f32> = want.iter().map(|&x| round(x)).collect();
            assert_eq!(got, &want, "{dtype:?}");
        }
    }
}

/// The shapes of a spec's parameters.
fn shapes_of(text: &str) -> Vec<(String, Vec<usize>)> {
    let spec = spec::parse(text, "t", Path::new("specs"), &[]).unwrap();
    (graph::build(&spec, 1).params.iter())
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect()
}

/// A file of a tied model (no `lm_head`) loads into `tied_head = false`: the head
/// starts as the token embedding.
#[test]
fn a_tied_file_loads_into_an_untied_model() {
    let tensors = gpt2_tensors(4);
    assert!(!tensors.iter().any(|t| t.0 == "lm_head.weight"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tied.safetensors");
    write_gpt2(&file, "", &tensors);
    let untied = shapes_of(&spec_with("tied_head = false"));
    let imported = checkpoint::import_gpt2(&file, &untied).expect("a tied file imports");
    let at = |name: &str| untied.iter().position(|(n, _)| n == name).unwrap();
    assert_eq!(imported[at("lm_head.weight")], imported[at("wte")]);
    let wte = &tensors.iter().find(|t| t.0 == "wte.weight").unwrap().2;
    assert_eq!(&imported[at("wte")], wte);
}

/// nanoGPT's and PyTorch's `nn.Linear` layout — the four Conv1D matrices stored (out,
/// in) — is recognised from its non-square matrices and loaded as it is, giving the
/// same parameters as GPT-2's (in, out) file of the same model.
#[test]
fn linear_layout_files_load_untransposed() {
    let conv1d = gpt2_tensors(4);
    let linear: Vec<(String, Vec<usize>, Vec<f32>)> = conv1d
        .iter()
        .map(|(name, shape, values)| {
            let is_conv1d = ["c_attn.weight", "c_proj.weight", "c_fc.weight"]
                .iter()
                .any(|s| name.ends_with(s));
            if !is_conv1d {
                return (name.clone(), shape.clone(), values.clone());
            }
            let (rows, cols) = (shape[0], shape[1]); // (in, out)
            let mut t = vec![0.0; values.len()];
            for i in 0..rows {
                for o in 0..cols {
                    t[o * rows + i] = values[i * cols + o];
                }
            }
            (name.clone(), vec![cols, rows], t)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("conv1d.safetensors"),
        dir.path().join("linear.safetensors"),
    );
    write_gpt2(&a, "", &conv1d);
    write_gpt2(&b, "transformer.", &linear);
    let shapes = shapes_of(&spec_text());
    let from_conv1d = checkpoint::import_gpt2(&a, &shapes).unwrap();
    let from_linear = checkpoint::import_gpt2(&b, &shapes).expect("an nn.Linear file imports");
    assert_eq!(from_conv1d, from_linear);
}

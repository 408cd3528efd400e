//! A run's model as Hugging Face `transformers` loads it: `model.safetensors` in
//! GPT-2's layout (names under `transformer.`, the four linear layers as Conv1D
//! (in, out) matrices, `lm_head.weight` only when the head is untied) and a
//! `config.json` for `GPT2LMHeadModel`. The inverse of `import_gpt2`, which reads the
//! written file back into the same parameters bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};

use super::gpt2::is_conv1d;
use crate::graph::names::{LM_HEAD, WPE, WTE};
use crate::spec::{Spec, Vocab};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ExportError {
    #[error("GPT-2 attends to every earlier position; this model was trained with {attention}")]
    #[diagnostic(
        code(cllm::export),
        help(
            "`transformers`' GPT2LMHeadModel would compute another model; only runs with \
             `model.attention = dense` export"
        )
    )]
    Attention { attention: String },
    #[error("cannot write `{path}`")]
    #[diagnostic(
        code(cllm::export),
        help("check that the folder is writable and the disk has room")
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The name Hugging Face's GPT-2 stores our parameter `name` under.
fn hf_name(name: &str) -> String {
    match name {
        WTE | WPE => format!("transformer.{name}.weight"),
        LM_HEAD => name.to_string(),
        _ => format!("transformer.{name}"),
    }
}

/// `config.json` for `GPT2LMHeadModel`: the model's sizes, GPT-2's tanh GELU
/// (`gelu_new`), no dropout.
fn config(spec: &Spec) -> serde_json::Value {
    let m = &spec.model;
    let mut config = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": m.vocab_size(),
        "n_positions": m.context,
        "n_ctx": m.context,
        "n_embd": m.width,
        "n_layer": m.layers,
        "n_head": m.heads,
        "n_inner": m.mlp_width(),
        "activation_function": "gelu_new",
        "layer_norm_epsilon": m.ln_eps,
        "initializer_range": m.init_std,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": m.tied_head,
        "torch_dtype": "float32",
    });
    // GPT-2's `<|endoftext|>` is the default of both; other vocabularies have no such
    // token (`transformers` warns about an id outside the vocabulary).
    let end = (m.vocab == Vocab::Gpt2).then_some(crate::data::GPT2_END_OF_TEXT);
    config["bos_token_id"] = end.into();
    config["eos_token_id"] = end.into();
    config
}

/// Writes `model.safetensors`, `config.json` and the vocabulary's tokenizer files
/// (`hf_tokenizer.rs`) for `spec`'s model with `params` ((name, shape, values) in our
/// layout) into `dir`, each atomically; returns the paths.
pub fn export_hf(
    spec: &Spec,
    params: &[(String, Vec<usize>, Vec<f32>)],
    dir: &Path,
) -> Result<Vec<PathBuf>, ExportError> {
    if spec.model.attention.masked() {
        let attention = spec.model.attention.to_cllm();
        return Err(ExportError::Attention { attention });
    }
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|(name, shape, values)| {
            let (shape, values) = if is_conv1d(name) {
                let (rows, cols) = (shape[0], shape[1]);
                let mut t = vec![0.0f32; values.len()];
                for o in 0..rows {
                    for i in 0..cols {
                        t[i * rows + o] = values[o * cols + i];
                    }
                }
                (vec![cols, rows], t)
            } else {
                (shape.clone(), values.clone())
            };
            let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            (hf_name(name), shape, bytes)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, bytes)| {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches");
        (name.clone(), view)
    });
    // `transformers` refuses a safetensors file whose metadata does not name its format.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let model = dir.join("model.safetensors");
    let write = |path: &Path, bytes: &[u8]| {
        crate::files::write_atomic(path, bytes).map_err(|source| ExportError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let encoded =
        safetensors::serialize(views, Some(metadata)).map_err(|e| ExportError::Write {
            path: model.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    write(&model, &encoded)?;
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config(spec)).expect("JSON serializes");
    write(&config_path, format!("{text}\n").as_bytes())?;
    let mut written = vec![model, config_path];
    for (name, contents) in super::hf_tokenizer::files(spec) {
        let path = dir.join(name);
        write(&path, contents.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

//! `model.weights`: where a model's initial weights come from — a safetensors file, or
//! a model in the local Hugging Face cache (`hf("gpt2")`), whose `config.json` also
//! gives the sizes the spec leaves out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ast::{Spanned, Value, format_number};
use super::choices::Vocab;
use super::convert::{Args, Field, Unit, unknown_variant, variant};
use super::error::Problem;
use super::lower::KeySpans;
use super::types::Spec;
use crate::hub::{self, HubConfig, HubError};

/// Initial weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Weights {
    /// `"path.safetensors"`: a GPT-2-layout safetensors file (Hugging Face's, nanoGPT's
    /// or a cllm checkpoint), relative to the spec's folder.
    File(String),
    /// `hf("org/name", revision = "main")`: `model.safetensors` of a model in the local
    /// Hugging Face cache (never downloaded).
    Hub {
        hf: String,
        revision: Option<String>,
    },
}

impl Weights {
    /// The source in spec syntax, e.g. `hf("gpt2")`.
    pub fn to_cllm(&self) -> String {
        self.write(Unit::None).to_string()
    }

    /// The safetensors file to read.
    pub fn file(&self, base_dir: &Path) -> Result<PathBuf, HubError> {
        match self {
            Weights::File(path) => Ok(base_dir.join(path)),
            Weights::Hub { hf, revision } => {
                let snapshot = hub::locate(&hub::cache_dir(), hf, revision.as_deref())?;
                Ok(snapshot.join(hub::WEIGHTS_FILE))
            }
        }
    }
}

impl Field for Weights {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        if let Value::Str(path) = &value.node {
            return Ok(Weights::File(path.clone()));
        }
        let what = "a safetensors file such as `\"gpt2.safetensors\"`, `hf(\"gpt2\")` or `none`";
        let (name, span, args) = variant(value, what)?;
        match name {
            "hf" => {
                let args = Args::new(name, span, args, &["repo", "revision"])?;
                Ok(Weights::Hub {
                    hf: args.required("repo", Unit::None)?,
                    revision: args.get_opt("revision", Unit::None)?,
                })
            }
            _ => Err(unknown_variant(name, span, "weights source", &["hf"])),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        match self {
            Weights::File(path) => Value::Str(path.clone()),
            Weights::Hub { hf, revision } => {
                let mut args = vec![(None, Value::Str(hf.clone()))];
                if let Some(rev) = revision {
                    args.push((Some("revision"), Value::Str(rev.clone())));
                }
                Value::call("hf", args)
            }
        }
    }
}

/// For `weights = hf(...)`: reads the cached model's `config.json`, fills the model
/// keys the spec left out (vocab, context, width, layers, heads, mlp, ln_eps,
/// tied_head) and checks the ones it gave (context may be shorter than the model's).
/// Problems point at the key, or at `model.weights` when the cache cannot be read.
pub(super) fn sizes_from_hub(spec: &mut Spec, spans: &KeySpans) -> Vec<Problem> {
    let Some(Weights::Hub { hf, revision }) = spec.model.weights.clone() else {
        return Vec::new();
    };
    let (origin, span) = spans
        .first_given(&["model.weights"])
        .expect("weights = hf(...) was written");
    let config = hub::locate(&hub::cache_dir(), &hf, revision.as_deref())
        .and_then(|snapshot| hub::read_config(&snapshot));
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            let help = miette::Diagnostic::help(&err).map_or(String::new(), |h| h.to_string());
            let problem = Problem::new(span, err.to_string(), "cannot read this model");
            return vec![problem.with_help(help).in_origin(origin)];
        }
    };
    fill(spec, spans, &config, &hf)
}

/// `model.KEY = OURS` against the weights' `THEIRS`, pointing at the key.
fn mismatch(spans: &KeySpans, repo: &str, key: &str, ours: String, theirs: String) -> Problem {
    let (origin, span) = spans
        .first_given(&[&format!("model.{key}")])
        .expect("given");
    Problem::new(
        span,
        format!("`model.{key} = {ours}`, but `{repo}`'s config.json says {theirs}"),
        "does not fit the weights",
    )
    .with_help(format!("remove `{key}` to take it from the weights"))
    .in_origin(origin)
}

/// Each key: given and checked, or taken from `config`.
fn fill(spec: &mut Spec, spans: &KeySpans, config: &HubConfig, repo: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let m = &mut spec.model;
    let their_vocab = format!("vocab_size = {}", config.vocab_size);
    if spans.given("model", "vocab") {
        if m.vocab_size() != config.vocab_size {
            let ours = m.vocab.write(Unit::None).to_string();
            problems.push(mismatch(spans, repo, "vocab", ours, their_vocab));
        }
    } else if config.vocab_size == 256 {
        m.vocab = Vocab::Bytes;
    } else if config.vocab_size == crate::data::GPT2_VOCAB as u64 {
        m.vocab = Vocab::Gpt2;
    } else {
        let (origin, span) = spans.first_given(&["model.weights"]).expect("given");
        problems.push(
            Problem::new(
                span,
                format!(
                    "`{repo}` has {their_vocab}, which is neither `gpt2` (50 257) nor `bytes` (256)"
                ),
                "unknown vocabulary",
            )
            .with_help(format!(
                "set `model.vocab = words(size = {})` if it is a cllm words model",
                config.vocab_size
            ))
            .in_origin(origin),
        );
    }
    let sizes = [
        ("width", &mut m.width, config.n_embd, "n_embd"),
        ("layers", &mut m.layers, config.n_layer, "n_layer"),
        ("heads", &mut m.heads, config.n_head, "n_head"),
    ];
    for (key, ours, theirs, name) in sizes {
        if !spans.given("model", key) {
            *ours = theirs;
        } else if *ours != theirs {
            let theirs = format!("{name} = {theirs}");
            problems.push(mismatch(spans, repo, key, ours.to_string(), theirs));
        }
    }
    if !spans.given("model", "context") {
        m.context = config.n_positions;
    } else if m.context > config.n_positions {
        let theirs = format!(
            "n_positions = {} (it has no more positions)",
            config.n_positions
        );
        problems.push(mismatch(
            spans,
            repo,
            "context",
            m.context.to_string(),
            theirs,
        ));
    }
    let hidden = config.n_inner.unwrap_or(4 * config.n_embd);
    if !spans.given("model", "mlp") {
        m.mlp = hidden as f64 / m.width as f64;
    } else if m.mlp_width() != hidden {
        let theirs = format!("n_inner = {hidden}");
        problems.push(mismatch(spans, repo, "mlp", format_number(m.mlp), theirs));
    }
    if !spans.given("model", "ln_eps") {
        m.ln_eps = config.layer_norm_epsilon;
    }
    // A tied file loads into an untied model, and an untied file into a tied model is
    // refused when the weights are read: a given `tied_head` is the user's choice.
    if !spans.given("model", "tied_head") {
        m.tied_head = config.tie_word_embeddings;
    }
    problems
}

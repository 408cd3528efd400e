//! The syntax tree (and `--set` overrides) → the typed [`Spec`], collecting every
//! problem instead of stopping at the first.

use std::collections::HashMap;

use super::ast::{Document, Span, Spanned, Value};
use super::error::Problem;
use super::types::{BLOCKS, Spec};

/// Where each given key was written: `(block, key)` → (origin, span of the value).
/// Keys left at their default are absent. Validation uses it to point at the text.
#[derive(Debug, Default)]
pub struct KeySpans {
    map: HashMap<(String, String), (usize, Span)>,
}

impl KeySpans {
    /// Whether the user gave `block.key` (in the file or with `--set`).
    pub fn given(&self, block: &str, key: &str) -> bool {
        self.map.contains_key(&(block.to_string(), key.to_string()))
    }

    /// The first of `keys` (as `block.key`) that was given, as an (origin, span).
    pub fn first_given(&self, keys: &[&str]) -> Option<(usize, Span)> {
        keys.iter().find_map(|path| {
            let (block, key) = path.split_once('.')?;
            self.map.get(&(block.to_string(), key.to_string())).copied()
        })
    }

    fn insert(&mut self, block: &str, key: &str, origin: usize, span: Span) {
        self.map
            .insert((block.to_string(), key.to_string()), (origin, span));
    }
}

/// One `key = value` to apply, from the file (origin 0) or an override (origin ≥ 1).
pub struct Assignment<'a> {
    pub origin: usize,
    pub block: &'a Spanned<String>,
    pub key: &'a Spanned<String>,
    pub value: &'a Spanned<Value>,
}

/// Keys that moved or were renamed, with the hint to give.
fn renamed(block: &str, key: &str) -> Option<&'static str> {
    match (block, key) {
        ("data", "task") => Some("the data source is `source`: `source = addition(digits = 3)`"),
        ("data" | "model", "tokenizer") => Some("the tokenizer is `model.vocab`: `vocab = bytes`"),
        ("model", "n_embd" | "d_model" | "dim") => Some("did you mean `width`?"),
        ("model", "n_layer") => Some("did you mean `layers`?"),
        ("model", "n_head") => Some("did you mean `heads`?"),
        ("model", "block_size" | "seq_len") => Some("did you mean `context`?"),
        ("train", "lr" | "learning_rate") => {
            Some("the learning rate is an optimizer argument: `optimizer = adamw(lr = 3e-4)`")
        }
        ("train", "batch_size") => Some("did you mean `batch`?"),
        _ => None,
    }
}

/// Checks the document's own structure (version, blocks, labels, duplicates) and
/// returns its entries as assignments, in order.
pub fn assignments<'a>(doc: &'a Document, problems: &mut Vec<Problem>) -> Vec<Assignment<'a>> {
    if doc.version.node != super::VERSION {
        problems.push(
            Problem::new(
                doc.version.span,
                format!("unsupported spec version `{}`", doc.version.node),
                "unknown version",
            )
            .with_help(format!("this cllm reads `cllm {}`", super::VERSION)),
        );
    }
    let mut seen_blocks: HashMap<&str, Span> = HashMap::new();
    let mut out = Vec::new();
    for block in &doc.blocks {
        let name = block.name.node.as_str();
        if !BLOCKS.contains(&name) {
            problems.push(
                Problem::new(
                    block.name.span,
                    format!("unknown block `{name}`"),
                    "unknown block",
                )
                .suggest(name, BLOCKS),
            );
            continue;
        }
        if seen_blocks.insert(name, block.name.span).is_some() {
            problems.push(
                Problem::new(
                    block.name.span,
                    format!("block `{name}` appears twice"),
                    "second time",
                )
                .with_help(format!("merge the two `{name}` blocks into one")),
            );
            continue;
        }
        match (&block.label, name) {
            (None, _) => {}
            (Some(label), "model") if label.node == "gpt" => {}
            (Some(label), "model") => problems.push(
                Problem::new(
                    label.span,
                    format!("unknown model family `{}`", label.node),
                    "unknown family",
                )
                .with_help("the one model family is `gpt`: `model gpt { ... }`"),
            ),
            (Some(label), _) => problems.push(
                Problem::new(
                    label.span,
                    format!("block `{name}` takes no label"),
                    "unexpected word",
                )
                .with_help(format!("write `{name} {{ ... }}`")),
            ),
        }
        let mut seen_keys: HashMap<&str, Span> = HashMap::new();
        for entry in &block.entries {
            if seen_keys.insert(&entry.key.node, entry.key.span).is_some() {
                problems.push(
                    Problem::new(
                        entry.key.span,
                        format!("`{name}.{}` is set twice", entry.key.node),
                        "set again here",
                    )
                    .with_help("keep one of the two lines"),
                );
                continue;
            }
            out.push(Assignment {
                origin: 0,
                block: &block.name,
                key: &entry.key,
                value: &entry.value,
            });
        }
    }
    out
}

/// Applies assignments, in order, to a default spec. Later assignments of the same
/// key win (that is how `--set` overrides the file).
pub fn apply(assignments: &[Assignment<'_>], problems: &mut Vec<Problem>) -> (Spec, KeySpans) {
    let mut spec = Spec::default();
    let mut spans = KeySpans::default();
    for a in assignments {
        let (block, key) = (a.block.node.as_str(), a.key.node.as_str());
        if !BLOCKS.contains(&block) {
            problems.push(
                Problem::new(
                    a.block.span,
                    format!("unknown block `{block}`"),
                    "unknown block",
                )
                .suggest(block, BLOCKS)
                .in_origin(a.origin),
            );
            continue;
        }
        match spec.set(block, key, a.value) {
            Ok(true) => spans.insert(block, key, a.origin, a.value.span),
            Ok(false) => {
                let known = Spec::keys(block).0;
                let problem = Problem::new(
                    a.key.span,
                    format!("unknown key `{key}` in block `{block}`"),
                    "unknown key",
                );
                let problem = match renamed(block, key) {
                    Some(hint) => problem.with_help(hint),
                    None => problem.suggest(key, known),
                };
                problems.push(problem.in_origin(a.origin));
            }
            Err(problem) => problems.push(problem.in_origin(a.origin)),
        }
    }
    (spec, spans)
}

/// Fills the defaults that depend on other keys.
pub fn resolve_derived(spec: &mut Spec, spans: &KeySpans) {
    spec.train.schedule = spec.train.schedule.resolve(spec.train.optimizer.lr());
    if !spans.given("plan", "shards") {
        // The largest divisor of the micro-batch up to 8: shards are equal-sized.
        spec.plan.shards = super::largest_shard_count(spec.train.micro_batch(), 8);
    }
}

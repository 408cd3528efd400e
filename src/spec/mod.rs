//! Stage 1 of the pipeline: `.cllm` text → a validated [`Spec`].
//!
//! ```text
//! text ──syntax (pest)──▶ ast::Document ──lower──▶ Spec ──validate──▶ Spec (resolved)
//!  --set key=value ──syntax──┘ (applied after the file, so it wins)
//! ```
//!
//! Every failure is a [`SpecError`]: miette diagnostics that point at the text.

mod ast;
mod choices;
mod convert;
mod error;
mod lower;
mod print;
mod resume;
mod run_choices;
mod syntax;
mod types;
mod validate;
mod weights;

use std::path::{Path, PathBuf};

pub use ast::{Span, Spanned, Value, human_bytes};
pub use choices::{Attention, Coords, Separator, Source, Vocab, identity_basis};
pub use error::{Problem, SpecError, did_you_mean, render_plain};
pub use print::to_cllm;
pub use resume::{Change, SAFE_ON_RESUME, resume_changes};
pub use run_choices::{Gemm, Optimizer, Schedule, Threads};
pub use types::{BLOCKS, Checkpoint, Data, Eval, Model, Plan, Sample, Spec, Train};
pub use validate::MAX_THREADS;
pub use weights::Weights;

/// The spec language version this build reads and writes.
pub const VERSION: &str = "0.1";

/// Why a spec file could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("cannot read spec `{path}`")]
    #[diagnostic(code(cllm::io), help("check the path; specs usually live in specs/"))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecError),
}

/// Reads, parses and validates the spec at `path`, then applies `overrides`
/// (`block.key=value`, as given to `--set`). Relative paths inside the spec are
/// resolved against the spec's folder.
pub fn load(path: &Path, overrides: &[String]) -> Result<Spec, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = crate::files::read_regular(path, crate::files::SPEC_LIMIT).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = std::str::from_utf8(valid).expect("the prefix is valid");
        let line = valid.matches('\n').count() + 1;
        let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text: the byte at line {line}, column {column} is invalid (save the file as UTF-8)"
            ),
        ))
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    Ok(parse(
        &text,
        &path.display().to_string(),
        base_dir,
        overrides,
    )?)
}

/// Parses and validates spec `text` (called `name` in diagnostics), applying
/// `overrides` after it. `base_dir` resolves relative paths.
pub fn parse(
    text: &str,
    name: &str,
    base_dir: &Path,
    overrides: &[String],
) -> Result<Spec, SpecError> {
    parse_checked(text, name, Some(base_dir), overrides)
}

/// A spec stored in a checkpoint, checked like a spec file except for the files it
/// names (they belong to the run that wrote it): printed and read back, so every range
/// and consistency check runs and points at its key in the printed text.
pub fn check_stored(spec: &Spec, name: &str) -> Result<Spec, SpecError> {
    check_stored_with(spec, name, &[])
}

/// [`check_stored`] with `overrides` (`--set block.key=value`) applied on top.
pub fn check_stored_with(spec: &Spec, name: &str, overrides: &[String]) -> Result<Spec, SpecError> {
    parse_checked(&to_cllm(spec, false), name, None, overrides)
}

fn parse_checked(
    text: &str,
    name: &str,
    base_dir: Option<&Path>,
    overrides: &[String],
) -> Result<Spec, SpecError> {
    let mut sources = vec![(name.to_string(), text.to_string())];
    sources.extend(overrides.iter().map(|o| ("--set".to_string(), o.clone())));
    let fail = |problems: Vec<Problem>| SpecError::new(&sources, problems);

    let document = syntax::parse_document(text).map_err(|p| fail(vec![p]))?;
    let mut problems = Vec::new();
    let mut assignments = lower::assignments(&document, &mut problems);

    let parsed_overrides: Vec<_> = overrides
        .iter()
        .enumerate()
        .map(|(i, text)| syntax::parse_override(text).map_err(|p| p.in_origin(i + 1)))
        .collect();
    for (i, parsed) in parsed_overrides.iter().enumerate() {
        match parsed {
            Ok((keys, value)) if keys.len() == 2 => assignments.push(lower::Assignment {
                origin: i + 1,
                block: &keys[0],
                key: &keys[1],
                value,
            }),
            Ok((keys, _)) => problems.push(
                Problem::new(
                    Span::new(keys[0].span.start, keys[keys.len() - 1].span.end),
                    "`--set` takes `block.key=value`",
                    "expected two names joined by a dot",
                )
                .with_help(
                    "e.g. `--set train.steps=100` or `--set train.optimizer=adamw(lr = 3e-4)`",
                )
                .in_origin(i + 1),
            ),
            Err(problem) => problems.push(problem.clone()),
        }
    }

    let (mut spec, spans) = lower::apply(&assignments, &mut problems);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    if base_dir.is_some() {
        // A stored spec has its sizes written out already; its cache may be gone.
        let problems = weights::sizes_from_hub(&mut spec, &spans);
        if !problems.is_empty() {
            return Err(fail(problems));
        }
    }
    lower::resolve_derived(&mut spec, &spans);
    let problems = validate::validate(&spec, &spans, base_dir, document.version.span);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    Ok(spec)
}

/// Parses a single value in spec syntax (e.g. `window(64)`), for tools and tests.
pub fn parse_value(text: &str) -> Result<Spanned<Value>, SpecError> {
    syntax::parse_value(text)
        .map_err(|p| SpecError::new(&[("value".to_string(), text.to_string())], vec![p]))
}

impl Attention {
    /// The pattern in spec syntax, e.g. `window(window = 64)`.
    pub fn to_cllm(&self) -> String {
        use convert::Field;
        self.write(convert::Unit::None).to_string()
    }

    /// Whether the pattern is sparse, so attention reads a (T,T) mask of kept keys
    /// (every pattern but `dense`).
    pub fn masked(&self) -> bool {
        *self != Attention::Dense
    }
}

impl Model {
    /// Symbols in the vocabulary (V).
    pub fn vocab_size(&self) -> u64 {
        match self.vocab {
            Vocab::Bytes => 256,
            Vocab::Words { size } => size,
            Vocab::Gpt2 => crate::data::GPT2_VOCAB as u64,
        }
    }

    /// Hidden width of the MLP (4·C by default).
    pub fn mlp_width(&self) -> u64 {
        (self.width as f64 * self.mlp).round() as u64
    }

    /// Trainable parameters, GPT-2 layout (biases and LayerNorm gains included): the
    /// one count (the graph builds exactly these; admission bounds memory with it), in
    /// 128-bit arithmetic so that no spec's sizes overflow it.
    pub fn parameter_count(&self) -> u128 {
        let (v, t, c, h) = (
            self.vocab_size() as u128,
            self.context as u128,
            self.width as u128,
            self.mlp_width() as u128,
        );
        let layernorm = 2 * c;
        let attention = c * 3 * c + 3 * c + c * c + c;
        let mlp = c * h + h + h * c + c;
        let head = if self.tied_head { 0 } else { v * c };
        let layers = self.layers as u128;
        v * c + t * c + layers * (2 * layernorm + attention + mlp) + layernorm + head
    }
}

impl Train {
    /// Sequences of one forward-backward pass: batch / accumulate.
    pub fn micro_batch(&self) -> u64 {
        self.batch / self.accumulate.max(1)
    }
}

/// The largest divisor of `micro_batch` that is at most `limit` (at least 1): the
/// default of `plan.shards` (limit 8), and the suggestion when a given one does not
/// divide the micro-batch (limit: the one given).
pub fn largest_shard_count(micro_batch: u64, limit: u64) -> u64 {
    largest_divisor_at_most(micro_batch, limit)
}

/// The largest divisor of `n` that is at most `limit` (1 when `n` or `limit` is 0), from
/// the divisor pairs (d, n/d) with d ≤ √n: O(√n) however large `limit` is (the "did you
/// mean" hints once scanned every value up to it).
pub fn largest_divisor_at_most(n: u64, limit: u64) -> u64 {
    let mut best = 1;
    let mut d = 1u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            for candidate in [d, n / d] {
                if candidate <= limit {
                    best = best.max(candidate);
                }
            }
        }
        d += 1;
    }
    best
}

//! The data source and the files a spec names, and the sizes they imply.

use std::path::Path;

use super::super::ast::format_number;
use super::super::choices::{Separator, Source, Vocab};
use super::super::types::Spec;
use super::super::weights::Weights;
use super::Checker;

pub(super) fn data(c: &mut Checker<'_>, spec: &Spec, base_dir: Option<&Path>) {
    let d = &spec.data;
    if d.separator != Separator::Between {
        let text = matches!(d.source, Source::Text { .. } | Source::Jsonl { .. });
        c.require(
            text && spec.model.vocab == Vocab::Gpt2,
            &["data.separator", "data.source", "model.vocab"],
            "`separator` places GPT-2's end-of-text token among the documents of a text or JSON Lines source".into(),
            "use it with `vocab = gpt2` and a `text(...)` or `jsonl(...)` source (shards were joined when they were written)",
        );
    }
    c.require(
        (0.0..1.0).contains(&d.val_split),
        &["data.val_split"],
        format!(
            "val_split must be in [0, 1), found {}",
            format_number(d.val_split)
        ),
        "the fraction of the corpus held out, e.g. `val_split = 10%`",
    );
    match &d.source {
        Source::Addition {
            digits, held_out, ..
        } => {
            c.require(
                (1..=9).contains(digits),
                &["data.source"],
                format!("addition digits must be between 1 and 9, found {digits}"),
                "e.g. `source = addition(digits = 3)`",
            );
            // Each held-out problem is kept as a pair and in a set: ~48 bytes. Bounded
            // by the memory budget before anything is drawn (10^12 of them tried to
            // allocate 16 TB and aborted).
            // (At most half of all (a, b) pairs are held out: the task clamps to that.)
            let pairs = 10u64.saturating_pow(*digits as u32).saturating_pow(2) / 2;
            let bytes = (*held_out).min(pairs).saturating_mul(48);
            c.require(
                bytes <= spec.plan.memory_budget,
                &["data.source", "plan.memory_budget"],
                format!(
                    "{} held-out problems need about {}, over the memory budget of {}",
                    super::super::ast::format_number((*held_out).min(pairs) as f64),
                    super::super::ast::human_bytes(bytes),
                    super::super::ast::human_bytes(spec.plan.memory_budget)
                ),
                "hold out fewer problems, e.g. `held_out = 1000` (each is evaluated by sampling), or raise `plan.memory_budget`",
            );
            let line = 3 * digits + 3;
            c.require(
                spec.model.context >= line,
                &["model.context", "data.source"],
                format!(
                    "context {} is shorter than one {digits}-digit problem ({line} tokens)",
                    spec.model.context
                ),
                &format!("set `context = {line} tokens` or more"),
            );
            c.require(
                *held_out >= 1,
                &["data.source"],
                "held_out must be at least 1 problem".into(),
                "held-out problems measure accuracy, e.g. `held_out = 1000`",
            );
        }
        Source::Text { path } | Source::Jsonl { path, .. } | Source::Tokens { path } => {
            c.require(
                !matches!(
                    (&d.source, spec.model.vocab),
                    (
                        Source::Tokens { .. },
                        super::super::choices::Vocab::Words { .. }
                    )
                ),
                &["model.vocab", "data.source"],
                "a word vocabulary is built from text, but `tokens(...)` is already tokenised"
                    .into(),
                "use `vocab = gpt2` for GPT-2 token shards (llm.c's, nanoGPT's), or `bytes`",
            );
            if let Source::Jsonl { key, .. } = &d.source {
                c.require_labelled(
                    !key.is_empty(),
                    &["data.source"],
                    "empty key",
                    "the JSON key is empty".into(),
                    "e.g. `source = jsonl(\"data.jsonl\", key = \"text\")`",
                );
            }
            let missing = base_dir.filter(|base| !base.join(path).exists());
            let folder = base_dir.map_or(String::new(), folder_words);
            let (label, what) = match missing.map(|base| base.join(path)) {
                Some(full) if std::fs::symlink_metadata(&full).is_ok() => (
                    "broken link",
                    format!(
                        "`{}` is a symbolic link to nothing (or to itself){folder}",
                        path.escape_debug()
                    ),
                ),
                _ => (
                    "not found",
                    format!("no file or folder at `{}`{folder}", path.escape_debug()),
                ),
            };
            c.require_labelled(
                missing.is_none(),
                &["data.source"],
                label,
                what,
                &missing.and_then(|base| closest(base, path)).map_or(
                    "paths are relative to the spec's folder".to_string(),
                    |near| {
                        format!("did you mean `{near}`? (paths are relative to the spec's folder)")
                    },
                ),
            );
        }
    }
    // `hf(...)` weights were located when the sizes were read from their config.
    if let Some(Weights::File(weights)) = &spec.model.weights
        && let Some(base) = base_dir
    {
        let full = base.join(weights);
        let help = match closest(base, weights) {
            Some(near) if !full.is_file() => format!("did you mean `{near}`? (paths are relative to the spec's folder; `weights = none` starts from random weights)"),
            _ => "paths are relative to the spec's folder; write `weights = none` to start from random weights".to_string(),
        };
        let folder = folder_words(base);
        let (label, what) = match std::fs::symlink_metadata(&full) {
            Err(_) => (
                "not found",
                format!("no weights file at `{}`{folder}", weights.escape_debug()),
            ),
            Ok(_) => match std::fs::metadata(&full) {
                Err(_) => (
                    "broken link",
                    format!(
                        "`{}` is a symbolic link to nothing (or to itself){folder}",
                        weights.escape_debug()
                    ),
                ),
                Ok(meta) if meta.is_dir() => (
                    "a folder",
                    format!(
                        "`{}` is a folder, not a weights file{folder}",
                        weights.escape_debug()
                    ),
                ),
                Ok(_) => (
                    "not a regular file",
                    format!(
                        "`{}` is not a regular file (a FIFO, a device or a socket){folder}",
                        weights.escape_debug()
                    ),
                ),
            },
        };
        c.require_labelled(full.is_file(), &["model.weights"], label, what, &help);
    }
}

/// " (relative to the spec's folder `X`)", naming it.
fn folder_words(base: &Path) -> String {
    let shown = match base.as_os_str().is_empty() {
        true => ".".to_string(),
        false => base.display().to_string(),
    };
    format!(" (relative to the spec's folder `{shown}`)")
}

/// The name in `path`'s folder closest to its last component (a typo's likely fix), as
/// the user would write the path; none when the folder cannot be listed or nothing is
/// close.
fn closest(base: &Path, path: &str) -> Option<String> {
    let written = Path::new(path);
    let name = written.file_name()?.to_str()?;
    let folder = written.parent().unwrap_or(Path::new(""));
    let names: Vec<String> = std::fs::read_dir(base.join(folder))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .take(10_000)
        .collect();
    let known: Vec<&str> = names.iter().map(String::as_str).collect();
    // The name itself is no suggestion (a link to nothing is listed under its name).
    let known: Vec<&str> = known.into_iter().filter(|k| *k != name).collect();
    let near = super::super::error::did_you_mean(name, &known)?;
    Some(folder.join(near).display().to_string())
}

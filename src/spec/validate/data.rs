//! The data source and the files a spec names, and the sizes they imply.

use std::path::Path;

use super::super::ast::format_number;
use super::super::choices::Source;
use super::super::types::Spec;
use super::Checker;

pub(super) fn data(c: &mut Checker<'_>, spec: &Spec, base_dir: Option<&Path>) {
    let d = &spec.data;
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
                    "{} held-out problems need about {:.1} GiB, over the memory budget of {:.1} GiB",
                    (*held_out).min(pairs),
                    bytes as f64 / (1u64 << 30) as f64,
                    spec.plan.memory_budget as f64 / (1u64 << 30) as f64
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
        Source::Text { path } => {
            c.require(
                base_dir.is_none_or(|base| base.join(path).exists()),
                &["data.source"],
                format!("no file or folder at `{path}` (relative to the spec's folder)"),
                "paths are relative to the spec's folder",
            );
        }
    }
    if let Some(weights) = &spec.model.weights
        && let Some(base) = base_dir
    {
        let full = base.join(weights);
        c.require(full.is_file(), &["model.weights"], format!("no weights file at `{weights}` (relative to the spec's folder)"), "paths are relative to the spec's folder; write `weights = none` to start from random weights");
    }
}

//! Spec diagnostics: every problem points at a span and says how to fix it.
//!
//! Lowering collects [`Problem`]s (span + sentence + label + help) without the source
//! text; [`SpecError`] attaches the source once, at the boundary, and renders through
//! miette with line, column and a caret.

use miette::{Diagnostic, NamedSource, SourceSpan};

use super::ast::Span;

/// One thing wrong with a spec, before the source text is attached.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Which source the span indexes: 0 is the spec file, `i` is the `i`-th `--set`.
    pub origin: usize,
    pub span: Span,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn new(span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Problem {
            origin: 0,
            span,
            message: message.into(),
            label: label.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Moves the problem into another source (a `--set` override).
    pub fn in_origin(mut self, origin: usize) -> Self {
        self.origin = origin;
        self
    }

    /// Adds "did you mean `x`?" when `word` is close to one of `known`, else lists them.
    pub fn suggest(self, word: &str, known: &[&str]) -> Self {
        match did_you_mean(word, known) {
            Some(best) => self.with_help(format!("did you mean `{best}`?")),
            None => self.with_help(format!("expected one of: {}", quoted_list(known))),
        }
    }
}

/// An invalid spec: the first problem, with the rest attached as related diagnostics.
/// (Boxed: an error is rare, and a small `Result` keeps the happy path cheap.)
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(transparent)]
#[diagnostic(transparent)]
pub struct SpecError(Box<Located>);

/// One located problem, renderable by miette.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(cllm::spec))]
pub struct Located {
    message: String,
    #[source_code]
    source_code: Option<NamedSource<String>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
    #[related]
    others: Vec<Located>,
}

impl SpecError {
    /// Attaches the source texts, as `(name, text)` indexed by [`Problem::origin`], to
    /// the problems. `problems` must not be empty.
    pub fn new(sources: &[(String, String)], problems: Vec<Problem>) -> SpecError {
        assert!(!problems.is_empty(), "SpecError::new needs a problem");
        let mut errors: Vec<Located> = problems
            .into_iter()
            .map(|p| {
                let (name, text) = &sources[p.origin.min(sources.len() - 1)];
                SpecError::one(name, text, p)
            })
            .collect();
        if errors.len() == 1 {
            return SpecError(Box::new(errors.remove(0)));
        }
        // Several: a one-line summary, then every problem drawn the same way (miette
        // draws related diagnostics with an `Error:` line, not the first one).
        SpecError(Box::new(Located {
            message: format!("{} has {} problems", sources[0].0, errors.len()),
            source_code: None,
            span: None,
            label: String::new(),
            help: None,
            others: errors,
        }))
    }

    fn one(name: &str, source: &str, problem: Problem) -> Located {
        let (name, source, span) = match excerpt(source, problem.span) {
            Some((line, column, text, span)) => {
                (format!("{name}:{line}:{column} (excerpt)"), text, span)
            }
            None => (name.to_string(), source.to_string(), problem.span),
        };
        Located {
            message: problem.message,
            source_code: Some(NamedSource::new(name, source)),
            span: Some(span.into()),
            label: problem.label,
            help: problem.help,
            others: Vec::new(),
        }
    }

    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        self.0.others.len().max(1)
    }

    /// The first problem's message, without rendering.
    pub fn message(&self) -> &str {
        &self.0.others.first().unwrap_or(&self.0).message
    }
}

/// Lines longer than this are shown as an excerpt around the problem (the renderer
/// cannot draw columns past 65 535, and nobody reads a 60 000-column line).
const LONG_LINE: usize = 1000;
/// Bytes of context either side of the problem in an excerpt.
const CONTEXT: usize = 80;

/// For a problem on a very long line: (line, column, the excerpt, the span in it).
fn excerpt(source: &str, span: Span) -> Option<(usize, usize, String, Span)> {
    let start = span.start.min(source.len());
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    if line_end - line_start <= LONG_LINE {
        return None;
    }
    let boundary = |mut i: usize, up: bool| {
        while !source.is_char_boundary(i) {
            i = if up { i + 1 } else { i - 1 };
        }
        i
    };
    let from = boundary(start.saturating_sub(CONTEXT).max(line_start), false);
    let end = span.end.clamp(start, line_end);
    let to = boundary((end + CONTEXT).min(line_end), true);
    let line = source[..line_start].matches('\n').count() + 1;
    let column = source[line_start..start].chars().count() + 1;
    let text = format!("…{}…", &source[from..to]);
    let at = |i: usize| i - from + '…'.len_utf8();
    let span = Span::new(at(start), at(end));
    Some((line, column, text, span))
}

/// The closest of `known` to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let (best, distance) = known
        .iter()
        .map(|k| (*k, strsim::damerau_levenshtein(word, k)))
        .min_by_key(|(_, d)| *d)?;
    let allowed = (word.chars().count().max(best.len()) / 3).max(1);
    if distance <= allowed {
        return Some(best);
    }
    // A longer or shorter form of a known word (`training` → `train`), the shortest
    // such when several are.
    known
        .iter()
        .filter(|k| k.len() >= 3 && word.len() >= 3)
        .filter(|k| word.starts_with(**k) || k.starts_with(word))
        .min_by_key(|k| k.len().abs_diff(word.len()))
        .copied()
}

/// `a`, `b`, `c` → "`a`, `b`, `c`".
pub fn quoted_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders a diagnostic as plain text (no colour, fixed width): for tests and logs.
pub fn render_plain(diagnostic: &dyn Diagnostic) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_links(false);
    let mut out = String::new();
    handler
        .render_report(&mut out, diagnostic)
        .expect("writing to a String cannot fail");
    out
}

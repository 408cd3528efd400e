//! pest's parse tree → the untyped [`ast`](super::ast). The one place that sees pest.
//!
//! pest's errors become [`Problem`]s here, at this single boundary, so that every
//! syntax error is reported the same way as every type error: a span and a sentence.

use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest_derive::Parser;

use super::ast::{Argument, Block, Document, Entry, Span, Spanned, Value};
use super::error::Problem;

#[derive(Parser)]
#[grammar = "../grammar/cllm.pest"]
struct CllmParser;

/// Brackets (`[`, `(`) a value may nest: far beyond any spec (a lattice basis is 2),
/// and far below what the recursive parser and the tree walk can take on a thread's
/// stack (10 000 levels overflowed it).
pub const MAX_NESTING: usize = 64;

/// Refuses text whose brackets nest deeper than [`MAX_NESTING`], before any recursion,
/// pointing at the bracket that goes one level too deep. Strings and comments are
/// skipped as the grammar reads them.
fn check_nesting(text: &str) -> Result<(), Problem> {
    let (mut depth, mut in_string, mut escaped, mut in_comment) = (0usize, false, false, false);
    for (at, ch) in text.char_indices() {
        match (in_comment, in_string, ch) {
            (true, _, '\n') => in_comment = false,
            (true, ..) => {}
            (_, true, _) if escaped => escaped = false,
            (_, true, '\\') => escaped = true,
            (_, true, '"' | '\n') => in_string = false,
            (_, true, _) => {}
            (_, _, '"') => in_string = true,
            (_, _, '#') => in_comment = true,
            (_, _, '[' | '(') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Problem::new(
                        Span::new(at, at + 1),
                        format!("values nest deeper than {MAX_NESTING} brackets"),
                        "one level too deep",
                    )
                    .with_help("a spec value is a number, a word, a call or a short list: check for a runaway `[` or `(`"));
                }
            }
            (_, _, ']' | ')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a whole `.cllm` text.
pub fn parse_document(source: &str) -> Result<Document, Problem> {
    check_nesting(source)?;
    let mut pairs = CllmParser::parse(Rule::spec, source).map_err(|e| syntax_problem(e, source))?;
    let spec = pairs.next().expect("grammar: spec is the start rule");
    let mut inner = spec.into_inner();
    let version = inner.next().expect("grammar: version comes first");
    let version_number = version
        .into_inner()
        .next()
        .expect("grammar: version number");
    let blocks = inner
        .filter(|pair| pair.as_rule() == Rule::block)
        .map(block)
        .collect();
    Ok(Document {
        version: spanned_str(&version_number),
        blocks,
    })
}

/// Parses `block.key=value` (the argument of `--set`) into the key path and the value.
pub fn parse_override(text: &str) -> Result<(Vec<Spanned<String>>, Spanned<Value>), Problem> {
    check_nesting(text)?;
    let mut pairs =
        CllmParser::parse(Rule::override_arg, text).map_err(|e| syntax_problem(e, text))?;
    let mut inner = pairs.next().expect("grammar: override_arg").into_inner();
    let path = inner.next().expect("grammar: key path");
    let keys = path.into_inner().map(|p| spanned_str(&p)).collect();
    let value = value(
        inner
            .find(|p| p.as_rule() == Rule::value)
            .expect("grammar: value"),
    );
    Ok((keys, value))
}

/// Parses a single value, such as `window(64)` or `32 tokens`.
pub fn parse_value(text: &str) -> Result<Spanned<Value>, Problem> {
    check_nesting(text)?;
    let mut pairs =
        CllmParser::parse(Rule::value_only, text).map_err(|e| syntax_problem(e, text))?;
    let inner = pairs.next().expect("grammar: value_only").into_inner();
    let pair = inner
        .into_iter()
        .next()
        .expect("grammar: value_only holds a value");
    Ok(value(pair))
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    Span::new(span.start(), span.end())
}

fn spanned_str(pair: &Pair<'_, Rule>) -> Spanned<String> {
    Spanned::new(pair.as_str().to_string(), span_of(pair))
}

fn block(pair: Pair<'_, Rule>) -> Block {
    let mut name = None;
    let mut label = None;
    let mut entries = Vec::new();
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::ident if name.is_none() => name = Some(spanned_str(&part)),
            Rule::ident => label = Some(spanned_str(&part)),
            Rule::entry => entries.push(entry(part)),
            _ => {} // braces
        }
    }
    Block {
        name: name.expect("grammar: a block has a name"),
        label,
        entries,
    }
}

fn entry(pair: Pair<'_, Rule>) -> Entry {
    let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::equals);
    let key = spanned_str(&inner.next().expect("grammar: entry key"));
    let value = value(inner.next().expect("grammar: entry value"));
    Entry { key, value }
}

fn value(pair: Pair<'_, Rule>) -> Spanned<Value> {
    debug_assert_eq!(pair.as_rule(), Rule::value);
    // The value's own characters: a number with no unit ends where the number does (the
    // grammar's `number ~ unit?` also takes the whitespace after it, which made a
    // diagnostic's underline run into the next line).
    let end = pair
        .clone()
        .into_inner()
        .flat_map(|p| p.into_inner())
        .map(|p| p.as_span().end())
        .max()
        .filter(|_| {
            pair.clone()
                .into_inner()
                .next()
                .is_some_and(|p| p.as_rule() == Rule::number_with_unit)
        });
    let span = Span::new(pair.as_span().start(), end.unwrap_or(pair.as_span().end()));
    let inner = pair
        .into_inner()
        .next()
        .expect("grammar: value has one child");
    let node = match inner.as_rule() {
        Rule::number_with_unit => {
            let mut parts = inner.into_inner();
            let number = parts.next().expect("grammar: number");
            Value::Number {
                value: number_value(number.as_str()),
                unit: parts.next().map(|u| spanned_str(&u)),
            }
        }
        Rule::string => Value::Str(unescape(
            inner.into_inner().next().map_or("", |p| p.as_str()),
        )),
        Rule::ident => match inner.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            word => Value::Ident(word.to_string()),
        },
        Rule::call => {
            let mut parts = inner.into_inner();
            let name = spanned_str(&parts.next().expect("grammar: call name"));
            let args = parts
                .filter(|p| p.as_rule() == Rule::argument)
                .map(argument)
                .collect();
            Value::Call { name, args }
        }
        Rule::tuple => Value::Tuple(inner.into_inner().map(value).collect()),
        Rule::list => Value::List(inner.into_inner().map(value).collect()),
        rule => unreachable!("grammar: unexpected {rule:?} as a value"),
    };
    Spanned::new(node, span)
}

fn argument(pair: Pair<'_, Rule>) -> Argument {
    let inner = pair.into_inner().next().expect("grammar: argument");
    match inner.as_rule() {
        Rule::named_arg => {
            let mut parts = inner.into_inner().filter(|p| p.as_rule() != Rule::equals);
            let name = spanned_str(&parts.next().expect("grammar: argument name"));
            Argument {
                name: Some(name),
                value: value(parts.next().expect("grammar: argument value")),
            }
        }
        _ => Argument {
            name: None,
            value: value(inner),
        },
    }
}

/// `3_000` → 3000, `1e-3` → 0.001, `4k` → 4000, `1M` → 1e6.
fn number_value(text: &str) -> f64 {
    let (digits, scale) = match text.as_bytes().last() {
        Some(b'k') => (&text[..text.len() - 1], 1e3),
        Some(b'M') => (&text[..text.len() - 1], 1e6),
        _ => (text, 1.0),
    };
    let cleaned: String = digits.chars().filter(|&c| c != '_').collect();
    // The grammar only admits Rust-parsable float syntax, so this cannot fail; an
    // overflowing literal reads as infinity and is rejected by range checks.
    cleaned.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn rule_name(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::version | Rule::version_number => "a version line such as `cllm 0.1`",
        Rule::block => "a block such as `model gpt { ... }`",
        Rule::entry => "`key = value`",
        Rule::ident => "a name",
        Rule::value | Rule::value_only => "a value",
        Rule::number_with_unit | Rule::number => "a number",
        Rule::unit => "a unit",
        Rule::string => "a string",
        Rule::call => "a call such as `window(64)`",
        Rule::argument | Rule::named_arg => "an argument",
        Rule::tuple => "a tuple such as `(0.9, 0.95)`",
        Rule::list => "a list",
        Rule::key_path => "a key path such as `train.steps`",
        Rule::equals => "`=`",
        Rule::open_brace => "`{`",
        Rule::close_brace => "`}`",
        Rule::close_paren => "`)`",
        _ => "something else",
    }
}

fn syntax_problem(error: pest::error::Error<Rule>, source: &str) -> Problem {
    let span = match error.location {
        InputLocation::Pos(pos) => Span::new(pos, pos),
        InputLocation::Span((start, end)) => Span::new(start, end),
    };
    let general_help = "a spec is `cllm 0.1` followed by blocks of `key = value` lines, \
                        e.g. `train { steps = 100 }`";
    let ErrorVariant::ParsingError { positives, .. } = &error.variant else {
        return Problem::new(span, error.variant.message().to_string(), "here")
            .with_help(general_help);
    };
    let rest = source.get(span.start..).unwrap_or("");
    if rest.starts_with('"') {
        return Problem::new(span, "this string is not closed", "string starts here")
            .with_help("a string ends with `\"` on the same line; write a newline as `\\n`");
    }
    if rest.trim().is_empty() && positives.contains(&Rule::close_brace) {
        return Problem::new(span, "the spec ends inside a block", "end of file")
            .with_help("close the open block with `}`");
    }
    if positives.contains(&Rule::version) || positives.contains(&Rule::version_number) {
        return Problem::new(
            span,
            "a spec starts with its version line",
            "expected `cllm 0.1` here",
        )
        .with_help(format!("add `cllm {}` as the first line", super::VERSION));
    }
    // A unit is optional after a number; only mention it when nothing else fits.
    let mut wanted: Vec<&str> = positives
        .iter()
        .filter(|rule| **rule != Rule::unit || positives.len() == 1)
        .map(rule_name)
        .collect();
    wanted.dedup();
    let wanted = match wanted.as_slice() {
        [] => "something else".to_string(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    };
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let found = match rest.chars().next() {
        None => "the end of the file".to_string(),
        Some(c) if c.is_whitespace() => "a line break".to_string(),
        Some(_) if !word.is_empty() => format!("`{word}`"),
        Some(c) => format!("`{c}`"),
    };
    Problem::new(
        span,
        format!("expected {wanted}, found {found}"),
        format!("expected {wanted}"),
    )
    .with_help(general_help)
}

//! The untyped syntax tree of a `.cllm` file: what the grammar read, with byte spans.
//!
//! This is the layer between pest's parse tree and the typed [`Spec`](super::Spec):
//! it knows nothing of which blocks or keys exist. Spans are byte ranges into the
//! source so that every later error can point at the exact text.

use std::fmt;

/// A byte range `start..end` into the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(span: Span) -> Self {
        (span.start, span.end.saturating_sub(span.start)).into()
    }
}

/// A node together with where it stands in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

/// A whole file: `cllm 0.1` and its blocks, in source order.
#[derive(Clone, Debug)]
pub struct Document {
    pub version: Spanned<String>,
    pub blocks: Vec<Block>,
}

/// `name label? { key = value ... }`
#[derive(Clone, Debug)]
pub struct Block {
    pub name: Spanned<String>,
    pub label: Option<Spanned<String>>,
    pub entries: Vec<Entry>,
}

/// `key = value`
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: Spanned<String>,
    pub value: Spanned<Value>,
}

/// A value as written. Numbers keep their unit word; the typed layer checks it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number {
        value: f64,
        unit: Option<Spanned<String>>,
    },
    Str(String),
    Bool(bool),
    /// A bare word such as `bytes`, `dense`, `auto` or `none`.
    Ident(String),
    Call {
        name: Spanned<String>,
        args: Vec<Argument>,
    },
    Tuple(Vec<Spanned<Value>>),
    List(Vec<Spanned<Value>>),
}

/// One argument of a call: positional (`16`) or named (`radius = 2`).
#[derive(Clone, Debug, PartialEq)]
pub struct Argument {
    pub name: Option<Spanned<String>>,
    pub value: Spanned<Value>,
}

impl Value {
    /// A plain number with no unit.
    pub fn number(value: f64) -> Value {
        Value::Number { value, unit: None }
    }

    /// A number followed by a unit word (`32 tokens`, `4x`, `2 GiB`).
    pub fn with_unit(value: f64, unit: &str) -> Value {
        Value::Number {
            value,
            unit: Some(Spanned::new(unit.to_string(), Span::default())),
        }
    }

    /// `name(arg, key = arg, ...)` from already-built parts, for printing.
    pub fn call(name: &str, args: Vec<(Option<&str>, Value)>) -> Value {
        let here = Span::default();
        Value::Call {
            name: Spanned::new(name.to_string(), here),
            args: args
                .into_iter()
                .map(|(key, value)| Argument {
                    name: key.map(|k| Spanned::new(k.to_string(), here)),
                    value: Spanned::new(value, here),
                })
                .collect(),
        }
    }

    /// What kind of value this is, in the words an error message uses.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Number { .. } => "a number",
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Ident(_) => "a word",
            Value::Call { .. } => "a call",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
        }
    }
}

/// Formats a float so that it reads back as the same `f64` (Rust's shortest
/// round-trip form), as an integer literal when it is one.
pub fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else if value != 0.0 && (value.abs() < 1e-3 || value.abs() >= 1e15) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// "1.5 GiB", "12.0 MiB", "512 B", "203.1 TiB"; past 1 024 PiB in scientific notation
/// ("2.3e21 B"): sizes no machine has still read at a glance.
pub fn human_bytes(bytes: u64) -> String {
    let units = [
        ("PiB", 1u64 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    if bytes >= 1 << 60 {
        return format!("{:.1e} B", bytes as f64);
    }
    for (name, size) in units {
        if bytes >= size {
            return format!("{:.1} {name}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[Spanned<Value>]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", item.node)?;
    }
    Ok(())
}

/// Prints a value in `.cllm` syntax; the output parses back to an equal value.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number { value, unit } => {
                f.write_str(&format_number(*value))?;
                match unit.as_ref().map(|u| u.node.as_str()) {
                    None => Ok(()),
                    Some(u @ ("x" | "%")) => f.write_str(u),
                    Some(u) => write!(f, " {u}"),
                }
            }
            Value::Str(s) => write_string(f, s),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Ident(word) => f.write_str(word),
            Value::Call { name, args } => {
                write!(f, "{}(", name.node)?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(key) = &arg.name {
                        write!(f, "{} = ", key.node)?;
                    }
                    write!(f, "{}", arg.value.node)?;
                }
                f.write_str(")")
            }
            Value::Tuple(items) => {
                f.write_str("(")?;
                write_list(f, items)?;
                f.write_str(")")
            }
            Value::List(items) => {
                f.write_str("[")?;
                write_list(f, items)?;
                f.write_str("]")
            }
        }
    }
}

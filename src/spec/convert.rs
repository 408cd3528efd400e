//! Reading typed values out of the syntax tree, and writing them back.
//!
//! [`Field`] is implemented by every type a spec key can hold; [`Unit`] says which
//! unit words a number may carry; [`Args`] reads the arguments of a call such as
//! `adamw(lr = 3e-4, betas = (0.9, 0.95))` by position or by name.

use super::ast::{Argument, Span, Spanned, Value};
use super::error::{Problem, quoted_list};

/// The unit words a numeric key accepts. A bare number is always accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A plain number: any unit word is an error.
    None,
    Tokens,
    Seqs,
    Steps,
    /// A multiple, written `4x`.
    Ratio,
    /// A fraction in [0, 1], written `0.1` or `10%`.
    Fraction,
    /// A size in bytes, written `512 MiB`, `2 GiB` or a plain byte count.
    Bytes,
}

const BYTE_UNITS: [(&str, f64); 5] = [
    ("TiB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("GiB", 1024.0 * 1024.0 * 1024.0),
    ("MiB", 1024.0 * 1024.0),
    ("KiB", 1024.0),
    ("B", 1.0),
];

impl Unit {
    /// The unit words this unit accepts, canonical spelling first.
    fn words(self) -> &'static [&'static str] {
        match self {
            Unit::None => &[],
            Unit::Tokens => &["tokens", "token"],
            Unit::Seqs => &["seqs", "seq", "sequences"],
            Unit::Steps => &["steps", "step"],
            Unit::Ratio => &["x"],
            Unit::Fraction => &["%"],
            Unit::Bytes => &["TiB", "GiB", "MiB", "KiB", "B"],
        }
    }

    /// Scale of a written unit word (`%` is 1/100, `MiB` is 2^20).
    fn scale(self, word: &str) -> f64 {
        match self {
            Unit::Fraction => 0.01,
            Unit::Bytes => BYTE_UNITS
                .iter()
                .find(|(w, _)| *w == word)
                .map_or(1.0, |(_, s)| *s),
            _ => 1.0,
        }
    }

    /// How a value of this unit is printed in a resolved spec.
    pub fn write(self, value: f64) -> Value {
        match self {
            Unit::None | Unit::Fraction => Value::number(value),
            Unit::Bytes => {
                let (word, scale) = BYTE_UNITS
                    .iter()
                    .find(|(_, s)| value >= *s && (value / s).fract() == 0.0)
                    .copied()
                    .unwrap_or(("B", 1.0));
                Value::with_unit(value / scale, word)
            }
            unit => Value::with_unit(value, unit.words()[0]),
        }
    }
}

/// A type that a spec key (or call argument) can hold.
pub trait Field: Sized {
    /// Reads the value, checking its type and unit; ranges are checked by `validate`.
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem>;
    /// Writes the value back as syntax, in the canonical spelling.
    fn write(&self, unit: Unit) -> Value;
}

fn wrong_type(value: &Spanned<Value>, expected: &str) -> Problem {
    Problem::new(
        value.span,
        format!("expected {expected}, found {}", value.node.kind()),
        format!("this should be {expected}"),
    )
    .with_help(format!("replace {} with {expected}", value.node.kind()))
}

/// Reads a number and applies its unit.
pub fn read_number(value: &Spanned<Value>, unit: Unit) -> Result<f64, Problem> {
    let Value::Number {
        value: number,
        unit: written,
    } = &value.node
    else {
        return Err(wrong_type(value, "a number"));
    };
    let Some(written) = written else {
        return Ok(*number);
    };
    let accepted = unit.words();
    if accepted.contains(&written.node.as_str()) {
        return Ok(number * unit.scale(&written.node));
    }
    let problem = Problem::new(
        written.span,
        format!("`{}` is not a unit this key takes", written.node),
        "unexpected unit",
    );
    Err(if accepted.is_empty() {
        problem.with_help(format!(
            "write a plain number: `{}`",
            super::ast::format_number(*number)
        ))
    } else {
        problem.suggest(&written.node, accepted)
    })
}

impl Field for f64 {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        let number = read_number(value, unit)?;
        if number.is_finite() {
            Ok(number)
        } else {
            Err(Problem::new(
                value.span,
                "this number is too large",
                "not a finite number",
            )
            .with_help("write a number below 1e308"))
        }
    }
    fn write(&self, unit: Unit) -> Value {
        unit.write(*self)
    }
}

/// The largest whole number a spec may hold exactly (2^53, the f64 mantissa).
const MAX_WHOLE: f64 = 9_007_199_254_740_992.0;

impl Field for u64 {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        let number = read_number(value, unit)?;
        let found = super::ast::format_number(number);
        if number > MAX_WHOLE {
            return Err(Problem::new(
                value.span,
                format!("{found} is too large: whole numbers in a spec go up to 2^53 ≈ 9.0e15"),
                "too large",
            )
            .with_help("no size or count of a model a CPU can train comes near it"));
        }
        if number.fract() != 0.0 || number < 0.0 {
            let label = if number < 0.0 {
                "negative"
            } else {
                "not a whole number"
            };
            return Err(Problem::new(
                value.span,
                format!("expected a whole number ≥ 0, found {found}"),
                label,
            )
            .with_help("write a whole number such as `4`, `3_000` or `4k`"));
        }
        Ok(number as u64)
    }
    fn write(&self, unit: Unit) -> Value {
        unit.write(*self as f64)
    }
}

impl Field for i64 {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        let number = read_number(value, unit)?;
        if number.fract() != 0.0 || number.abs() > MAX_WHOLE {
            return Err(
                Problem::new(value.span, "expected a whole number", "not a whole number")
                    .with_help("write a whole number such as `-1`, `0` or `2`"),
            );
        }
        Ok(number as i64)
    }
    fn write(&self, unit: Unit) -> Value {
        unit.write(*self as f64)
    }
}

impl Field for bool {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        match &value.node {
            Value::Bool(b) => Ok(*b),
            Value::Ident(word) if matches!(word.as_str(), "on" | "yes") => Ok(true),
            Value::Ident(word) if matches!(word.as_str(), "off" | "no") => Ok(false),
            _ => Err(wrong_type(value, "`true` or `false`")),
        }
    }
    fn write(&self, _unit: Unit) -> Value {
        Value::Bool(*self)
    }
}

impl Field for String {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        match &value.node {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(wrong_type(value, "a string in double quotes")),
        }
    }
    fn write(&self, _unit: Unit) -> Value {
        Value::Str(self.clone())
    }
}

/// `none` means absent; anything else is read as `T`.
impl<T: Field> Field for Option<T> {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        match &value.node {
            Value::Ident(word) if word == "none" => Ok(None),
            _ => T::read(value, unit).map(Some),
        }
    }
    fn write(&self, unit: Unit) -> Value {
        match self {
            None => Value::Ident("none".to_string()),
            Some(inner) => inner.write(unit),
        }
    }
}

/// `(a, b)`
impl<T: Field> Field for (T, T) {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        match &value.node {
            Value::Tuple(items) if items.len() == 2 => {
                Ok((T::read(&items[0], unit)?, T::read(&items[1], unit)?))
            }
            _ => Err(wrong_type(value, "a pair such as `(0.9, 0.95)`")),
        }
    }
    fn write(&self, unit: Unit) -> Value {
        let span = Span::default();
        Value::Tuple(vec![
            Spanned::new(self.0.write(unit), span),
            Spanned::new(self.1.write(unit), span),
        ])
    }
}

/// `[a, b, ...]`
impl<T: Field> Field for Vec<T> {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        match &value.node {
            Value::List(items) => items.iter().map(|item| T::read(item, unit)).collect(),
            _ => Err(wrong_type(value, "a list such as `[1, 2]`")),
        }
    }
    fn write(&self, unit: Unit) -> Value {
        let items = self
            .iter()
            .map(|x| Spanned::new(x.write(unit), Span::default()));
        Value::List(items.collect())
    }
}

/// A value that names a variant: a bare word (`dense`) or a call (`window(64)`).
/// Returns the name, its span and the call's arguments (empty for a bare word).
pub fn variant<'a>(
    value: &'a Spanned<Value>,
    what: &str,
) -> Result<(&'a str, Span, &'a [Argument]), Problem> {
    match &value.node {
        Value::Ident(word) => Ok((word, value.span, &[])),
        Value::Call { name, args } => Ok((&name.node, name.span, args)),
        _ => Err(wrong_type(value, what)),
    }
}

/// An unknown variant name, with a suggestion.
pub fn unknown_variant(name: &str, span: Span, what: &str, known: &[&str]) -> Problem {
    Problem::new(
        span,
        format!("unknown {what} `{name}`"),
        format!("not a known {what}"),
    )
    .suggest(name, known)
}

/// The arguments of a call, read by parameter name or position.
pub struct Args<'a> {
    call: &'a str,
    span: Span,
    params: &'a [&'a str],
    /// `slots[i]` is the value given for `params[i]`, if any.
    slots: Vec<Option<&'a Spanned<Value>>>,
}

impl<'a> Args<'a> {
    /// Matches `args` to `params`: positional arguments fill parameters in order,
    /// named ones fill theirs; unknown names, extra values and duplicates are errors.
    pub fn new(
        call: &'a str,
        span: Span,
        args: &'a [Argument],
        params: &'a [&'a str],
    ) -> Result<Args<'a>, Problem> {
        let mut slots = vec![None; params.len()];
        for (position, arg) in args.iter().enumerate() {
            let index = match &arg.name {
                None if position < params.len() => position,
                None => {
                    return Err(Problem::new(
                        arg.value.span,
                        format!("`{call}` takes at most {} argument(s)", params.len()),
                        "extra argument",
                    )
                    .with_help(format!("`{call}` takes {}", signature(params))));
                }
                Some(name) => params.iter().position(|p| *p == name.node).ok_or_else(|| {
                    Problem::new(
                        name.span,
                        format!("`{call}` has no argument `{}`", name.node),
                        "unknown argument",
                    )
                    .suggest(&name.node, params)
                })?,
            };
            if slots[index].is_some() {
                return Err(Problem::new(
                    arg.value.span,
                    format!("argument `{}` of `{call}` is given twice", params[index]),
                    "given again here",
                )
                .with_help("give each argument once, by position or by name"));
            }
            slots[index] = Some(&arg.value);
        }
        Ok(Args {
            call,
            span,
            params,
            slots,
        })
    }

    /// The argument `param`, or `default` when it was not given.
    pub fn get<T: Field>(&self, param: &str, unit: Unit, default: T) -> Result<T, Problem> {
        Ok(self.get_opt(param, unit)?.unwrap_or(default))
    }

    /// The argument `param`, if it was given.
    pub fn get_opt<T: Field>(&self, param: &str, unit: Unit) -> Result<Option<T>, Problem> {
        match self.slot(param) {
            Some(value) => T::read(value, unit).map(Some),
            None => Ok(None),
        }
    }

    /// The argument `param`, which must be given.
    pub fn required<T: Field>(&self, param: &str, unit: Unit) -> Result<T, Problem> {
        self.get_opt(param, unit)?.ok_or_else(|| {
            Problem::new(
                self.span,
                format!("`{}` needs the argument `{param}`", self.call),
                "missing argument",
            )
            .with_help(format!("`{}` takes {}", self.call, signature(self.params)))
        })
    }

    fn slot(&self, param: &str) -> Option<&'a Spanned<Value>> {
        let index = self.params.iter().position(|p| *p == param);
        index.and_then(|i| self.slots[i])
    }
}

fn signature(params: &[&str]) -> String {
    if params.is_empty() {
        "no arguments".to_string()
    } else {
        quoted_list(params)
    }
}

//! The enumerated values of the `data` and `model` blocks: data sources,
//! vocabularies, coordinates and attention patterns. Each is written as a bare
//! word (`dense`) or a call (`window(64)`), and prints back the same way.

use serde::{Deserialize, Serialize};

use super::ast::{Spanned, Value};
use super::convert::{Args, Field, Unit, unknown_variant, variant};
use super::error::Problem;

/// Where training text comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// `addition(digits = 3, reverse = false, held_out = 1000)`: generated `a+b=c`
    /// lines; `held_out` problems are kept apart for evaluation; `reverse` writes the
    /// sum's digits least significant first (as minGPT's adder does).
    Addition {
        digits: u64,
        reverse: bool,
        held_out: u64,
    },
    /// `text("path")`: a text file, or every `.txt` file of a directory (sorted by
    /// name); the path is relative to the spec's folder.
    Text { path: String },
    /// `jsonl("path", key = "text")`: JSON Lines, one document per line (the string
    /// under `key`), from a file or every `.jsonl` file of a directory.
    Jsonl { path: String, key: String },
    /// `tokens("path")`: token shards already tokenised (llm.c's `.bin` with its
    /// 256-int32 header, or nanoGPT's headerless uint16 `.bin`), a file or every `.bin`
    /// file of a directory; files whose name has the word `val` are the validation split.
    Tokens { path: String },
}

impl Source {
    /// The file or folder the source reads, if it reads one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Source::Addition { .. } => None,
            Source::Text { path } | Source::Jsonl { path, .. } | Source::Tokens { path } => {
                Some(path)
            }
        }
    }
}

impl Default for Source {
    fn default() -> Self {
        Source::Addition {
            digits: 3,
            reverse: false,
            held_out: 1000,
        }
    }
}

impl Field for Source {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        if let Value::Str(path) = &value.node {
            return Ok(Source::Text { path: path.clone() });
        }
        let (name, span, args) = variant(value, "a data source such as `text(\"file.txt\")`")?;
        match name {
            "addition" => {
                let args = Args::new(name, span, args, &["digits", "reverse", "held_out"])?;
                let Source::Addition {
                    digits,
                    reverse,
                    held_out,
                } = Source::default()
                else {
                    unreachable!("the default source is addition")
                };
                Ok(Source::Addition {
                    digits: args.get("digits", Unit::None, digits)?,
                    reverse: args.get("reverse", Unit::None, reverse)?,
                    held_out: args.get("held_out", Unit::None, held_out)?,
                })
            }
            "text" => {
                let args = Args::new(name, span, args, &["path"])?;
                Ok(Source::Text {
                    path: args.required("path", Unit::None)?,
                })
            }
            "jsonl" => {
                let args = Args::new(name, span, args, &["path", "key"])?;
                Ok(Source::Jsonl {
                    path: args.required("path", Unit::None)?,
                    key: args.get("key", Unit::None, "text".to_string())?,
                })
            }
            "tokens" => {
                let args = Args::new(name, span, args, &["path"])?;
                Ok(Source::Tokens {
                    path: args.required("path", Unit::None)?,
                })
            }
            _ => Err(unknown_variant(
                name,
                span,
                "data source",
                &["addition", "text", "jsonl", "tokens"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        match self {
            Source::Addition {
                digits,
                reverse,
                held_out,
            } => Value::call(
                "addition",
                vec![
                    (Some("digits"), Value::number(*digits as f64)),
                    (Some("reverse"), Value::Bool(*reverse)),
                    (Some("held_out"), Value::number(*held_out as f64)),
                ],
            ),
            Source::Text { path } => Value::call("text", vec![(None, Value::Str(path.clone()))]),
            Source::Jsonl { path, key } => Value::call(
                "jsonl",
                vec![
                    (None, Value::Str(path.clone())),
                    (Some("key"), Value::Str(key.clone())),
                ],
            ),
            Source::Tokens { path } => {
                Value::call("tokens", vec![(None, Value::Str(path.clone()))])
            }
        }
    }
}

/// Where GPT-2's end-of-text token goes when documents are joined into one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    /// `between`: between two documents (cllm's, and nanoGPT's `prepare.py`'s, habit).
    #[default]
    Between,
    /// `before_each`: before every document, the first too (llm.c's data scripts).
    BeforeEach,
}

impl Field for Separator {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "`between` or `before_each`")?;
        Args::new(name, span, args, &[])?;
        match name {
            "between" => Ok(Separator::Between),
            "before_each" => Ok(Separator::BeforeEach),
            _ => Err(unknown_variant(
                name,
                span,
                "separator",
                &["between", "before_each"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        Value::Ident(match self {
            Separator::Between => "between".into(),
            Separator::BeforeEach => "before_each".into(),
        })
    }
}

/// The token vocabulary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Vocab {
    /// `bytes`: 256 symbols, one per byte.
    #[default]
    Bytes,
    /// `words(size = 4096)`: the most frequent words of the corpus, with the 256
    /// bytes as fallback for everything else; `size` counts both.
    Words { size: u64 },
    /// `gpt2`: GPT-2's byte-level BPE, 50 257 tokens (the last is `<|endoftext|>`),
    /// its merge table built into cllm (the `tiktoken-rs` crate).
    Gpt2,
}

impl Field for Vocab {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "a vocabulary: `bytes`, `words(4096)` or `gpt2`")?;
        match name {
            "bytes" => Args::new(name, span, args, &[]).map(|_| Vocab::Bytes),
            "gpt2" => Args::new(name, span, args, &[]).map(|_| Vocab::Gpt2),
            "words" => {
                let args = Args::new(name, span, args, &["size"])?;
                Ok(Vocab::Words {
                    size: args.required("size", Unit::None)?,
                })
            }
            _ => Err(unknown_variant(
                name,
                span,
                "vocabulary",
                &["bytes", "words", "gpt2"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        match self {
            Vocab::Bytes => Value::Ident("bytes".into()),
            Vocab::Gpt2 => Value::Ident("gpt2".into()),
            Vocab::Words { size } => {
                Value::call("words", vec![(Some("size"), Value::number(*size as f64))])
            }
        }
    }
}

/// Where a position sits in the plane, for lattice attention.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Coords {
    /// `grid(w)`: position p at (p mod w, p div w).
    Grid { width: u64 },
    /// `ulam`: position p at its place on the Ulam spiral.
    Ulam,
}

impl Field for Coords {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "coordinates: `grid(16)` or `ulam`")?;
        match name {
            "grid" => {
                let args = Args::new(name, span, args, &["width"])?;
                Ok(Coords::Grid {
                    width: args.required("width", Unit::None)?,
                })
            }
            "ulam" => Args::new(name, span, args, &[]).map(|_| Coords::Ulam),
            _ => Err(unknown_variant(
                name,
                span,
                "coordinate system",
                &["grid", "ulam"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        match self {
            Coords::Grid { width } => {
                Value::call("grid", vec![(None, Value::number(*width as f64))])
            }
            Coords::Ulam => Value::Ident("ulam".into()),
        }
    }
}

/// Which keys each query may attend to. Always causal; always includes the diagonal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attention {
    /// `dense`: every earlier position.
    #[default]
    Dense,
    /// `window(w)`: the last `w` positions.
    Window { window: u64 },
    /// `strided(stride, window)`: the last `window` positions and every `stride`-th before.
    Strided { stride: u64, window: u64 },
    /// `primes(window = w)`: the last `window` positions, and every earlier position
    /// whose distance is a prime.
    Primes { window: u64 },
    /// `lattice(coords, basis = [[1, 0], [0, 1]], radius = 2, window = 16)`: the last
    /// `window` positions, and every q with x(q) = x(p) − v for a lattice vector v,
    /// 0 < ‖v‖ ≤ radius, of the lattice spanned by the rows of `basis`.
    Lattice {
        coords: Coords,
        basis: Vec<Vec<i64>>,
        radius: f64,
        window: u64,
    },
}

/// The identity basis of Z², the default lattice.
pub fn identity_basis() -> Vec<Vec<i64>> {
    vec![vec![1, 0], vec![0, 1]]
}

impl Field for Attention {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "an attention pattern such as `window(64)`")?;
        match name {
            "dense" => Args::new(name, span, args, &[]).map(|_| Attention::Dense),
            "window" => {
                let args = Args::new(name, span, args, &["window"])?;
                Ok(Attention::Window {
                    window: args.required("window", Unit::Tokens)?,
                })
            }
            "strided" => {
                let args = Args::new(name, span, args, &["stride", "window"])?;
                Ok(Attention::Strided {
                    stride: args.required("stride", Unit::Tokens)?,
                    window: args.required("window", Unit::Tokens)?,
                })
            }
            "primes" => {
                let args = Args::new(name, span, args, &["window"])?;
                Ok(Attention::Primes {
                    window: args.required("window", Unit::Tokens)?,
                })
            }
            "lattice" => {
                let params = ["coords", "basis", "radius", "window"];
                let args = Args::new(name, span, args, &params)?;
                Ok(Attention::Lattice {
                    coords: args.required("coords", Unit::None)?,
                    basis: args.get("basis", Unit::None, identity_basis())?,
                    radius: args.get("radius", Unit::None, 2.0)?,
                    window: args.get("window", Unit::Tokens, 16)?,
                })
            }
            _ => Err(unknown_variant(
                name,
                span,
                "attention pattern",
                &["dense", "window", "strided", "primes", "lattice"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        let n = |x: u64| Value::number(x as f64);
        match self {
            Attention::Dense => Value::Ident("dense".into()),
            Attention::Window { window } => Value::call("window", vec![(None, n(*window))]),
            Attention::Strided { stride, window } => {
                Value::call("strided", vec![(None, n(*stride)), (None, n(*window))])
            }
            Attention::Primes { window } => {
                Value::call("primes", vec![(Some("window"), n(*window))])
            }
            Attention::Lattice {
                coords,
                basis,
                radius,
                window,
            } => Value::call(
                "lattice",
                vec![
                    (None, coords.write(Unit::None)),
                    (Some("basis"), basis.write(Unit::None)),
                    (Some("radius"), Value::number(*radius)),
                    (Some("window"), n(*window)),
                ],
            ),
        }
    }
}

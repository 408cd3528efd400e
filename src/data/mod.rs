//! Training data: tokenizers, text corpora, the built-in addition task, and the
//! batches a step reads. Everything is deterministic given the spec's seed.

mod addition;
mod corpus;
mod prepare;
mod shards;
mod stream;
mod text;
mod tokenize;
mod tokenizer;

use std::path::{Path, PathBuf};

use cllm_kernels::softmax_xent::IGNORE;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::spec::{Source, Spec};

pub use addition::Addition;
pub use prepare::{Prepare, PrepareError, Prepared, prepare};
pub use stream::Tokens;
pub use tokenizer::{GPT2_END_OF_TEXT, GPT2_VOCAB, Tokenizer, WordCounts, WordVocab};

/// Why the data could not be prepared. Each says what to change.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DataError {
    #[error("cannot read `{path}`")]
    #[diagnostic(
        code(cllm::data),
        help("check the path (a spec's `data.source` is relative to the spec's folder)")
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the corpus `{path}` is empty")]
    #[diagnostic(
        code(cllm::data),
        help("point `data.source` at a file with text in it")
    )]
    Empty { path: PathBuf },
    #[error("the folder `{dir}` has no .{ext} files")]
    #[diagnostic(
        code(cllm::data),
        help(
            "a folder source reads every file in it with the source's extension: text(\"dir\") *.txt, jsonl(\"dir\") *.jsonl, tokens(\"dir\") *.bin"
        )
    )]
    NoFiles { dir: PathBuf, ext: &'static str },
    #[error("`{path}`, byte {offset}: {reason}")]
    #[diagnostic(
        code(cllm::data),
        help(
            "tokens(...) reads llm.c shards (a 256-int32 header, magic 20240520, version 1, then uint16 tokens) or nanoGPT's headerless uint16 .bin files"
        )
    )]
    BadShard {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
    #[error("`{path}`, byte {offset}: token {token} is outside the vocabulary of {vocab}")]
    #[diagnostic(
        code(cllm::data),
        help(
            "shards of GPT-2 tokens need `model.vocab = gpt2`; otherwise the file was written with another tokenizer"
        )
    )]
    TokenOutOfRange {
        path: PathBuf,
        offset: usize,
        token: u32,
        vocab: usize,
    },
    #[error("`{path}`, line {line} (byte {offset}): {reason}")]
    #[diagnostic(
        code(cllm::data),
        help(
            "each line of a JSON Lines source is an object such as {{\"text\": \"...\"}}; `jsonl(\"file\", key = \"...\")` names another key"
        )
    )]
    BadJsonl {
        path: PathBuf,
        line: usize,
        offset: usize,
        reason: String,
    },
    #[error(
        "the corpus `{path}` ({}) would take up to {} as 32-bit tokens in memory, over half of {}",
        crate::spec::human_bytes(*bytes), crate::spec::human_bytes(*needed), crate::spec::human_bytes(*limit)
    )]
    #[diagnostic(
        code(cllm::data),
        help(
            "tokenize it once into token shards (llm.c's or nanoGPT's .bin) and train with tokens(\"dir\"): shards are memory-mapped, 2 bytes a token, never read whole"
        )
    )]
    TooLarge {
        path: PathBuf,
        bytes: u64,
        needed: u64,
        /// The smaller of `plan.memory_budget` and the machine's memory.
        limit: u64,
    },
    #[error(
        "the {split} split has {tokens} tokens, but one training window needs context + 1 = {needed}"
    )]
    #[diagnostic(
        code(cllm::data),
        help("use a larger corpus, a smaller `model.context`, or a smaller `data.val_split`")
    )]
    TooShort {
        split: &'static str,
        tokens: usize,
        needed: usize,
    },
    #[error("a word vocabulary of size {size} needs {} distinct words, but the corpus has {distinct}", size.saturating_sub(256))]
    #[diagnostic(code(cllm::data), help("lower `model.vocab = words(size = ...)` to at most {}", distinct + 256))]
    VocabTooLarge { size: usize, distinct: usize },
}

/// One batch of B sequences of T tokens, with next-token targets.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    pub fn new(rows: usize, t: usize) -> Batch {
        Batch {
            tokens: vec![0; rows * t],
            targets: vec![IGNORE; rows * t],
        }
    }

    /// Targets that count towards the loss.
    pub fn scored(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// Where the training stream stands; saved in checkpoints so a resumed run reads
/// exactly the batches the uninterrupted run would have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub rng: Rng,
    /// Windows read so far (for in-order reading of text).
    pub windows: u64,
}

enum Corpus {
    Text { train: Tokens, val: Tokens },
    Addition(Addition),
}

/// The tokenized data of a run.
pub struct Dataset {
    pub tokenizer: Tokenizer,
    corpus: Corpus,
    context: usize,
    shuffle: bool,
    /// [`Dataset::split`].
    split: String,
    /// [`Dataset::tokenize_note`].
    tokenize_note: Option<String>,
}

/// Groups digits by three: 1 115 394.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

/// The split of shards by their names: which files, how many tokens.
fn split_by_names(
    (train, val): &(Vec<String>, Vec<String>),
    train_len: usize,
    val_len: usize,
) -> String {
    let list = |names: &[String]| match names {
        [one] => one.clone(),
        [first, .., last] => format!("{} files, {first} … {last}", names.len()),
        [] => "no file".to_string(),
    };
    format!(
        "training {} tokens ({}), validation {} tokens ({}: the word `val` in the name)",
        grouped(train_len),
        list(train),
        grouped(val_len),
        list(val)
    )
}

/// The split of one stream by `data.val_split`: token ranges.
fn split_by_share(val_split: f64, train_len: usize, total: usize) -> String {
    format!(
        "training tokens 0..{} ({} tokens), validation tokens {}..{} ({} tokens: the last {}%, `data.val_split = {val_split}`)",
        grouped(train_len),
        grouped(train_len),
        grouped(train_len),
        grouped(total),
        grouped(total - train_len),
        100.0 * val_split
    )
}

impl Dataset {
    /// Prepares the data `spec` names; paths are relative to `base_dir`.
    pub fn load(spec: &Spec, base_dir: &Path) -> Result<Dataset, DataError> {
        let context = spec.model.context as usize;
        let mut tokenize_note = None;
        let (tokenizer, corpus, split) = match &spec.data.source {
            Source::Addition {
                digits,
                reverse,
                held_out,
            } => {
                let task = Addition::new(
                    *digits as usize,
                    *reverse,
                    *held_out as usize,
                    spec.train.seed,
                );
                let split = format!(
                    "generated problems: training draws every {digits}-digit problem but the \
                     {} held out, which validation scores",
                    grouped(task.held_out.len())
                );
                (Tokenizer::Bytes, Corpus::Addition(task), split)
            }
            Source::Text { .. } | Source::Jsonl { .. } | Source::Tokens { .. } => {
                let started = std::time::Instant::now();
                let (tokenizer, all) = corpus::read(spec, base_dir)?;
                tokenize_note = prepare::hint(spec, base_dir, started.elapsed().as_secs_f64());
                let (train, val, split) = match all {
                    corpus::Read::Split { train, val, names } => {
                        let split = split_by_names(&names, train.len(), val.len());
                        (train, val, split)
                    }
                    corpus::Read::Whole(tokens) => {
                        let share = 1.0 - spec.data.val_split;
                        let n = tokens.len();
                        let (train, val) = tokens.split(((n as f64) * share).round() as usize);
                        let split = split_by_share(spec.data.val_split, train.len(), n);
                        (train, val, split)
                    }
                };
                for (name, part) in [("training", &train), ("validation", &val)] {
                    if part.len() < context + 1
                        && !(name == "validation" && spec.data.val_split == 0.0)
                    {
                        return Err(DataError::TooShort {
                            split: name,
                            tokens: part.len(),
                            needed: context + 1,
                        });
                    }
                }
                (tokenizer, Corpus::Text { train, val }, split)
            }
        };
        Ok(Dataset {
            tokenizer,
            corpus,
            context,
            shuffle: spec.data.shuffle,
            split,
            tokenize_note,
        })
    }

    /// When tokenizing a text source took long enough to matter, the sentence that says
    /// so and how to do it once (`cllm prepare`).
    pub fn tokenize_note(&self) -> Option<&str> {
        self.tokenize_note.as_deref()
    }

    /// Which tokens train and which validate, and how many each has: the files by
    /// name when the shards' names split them, else the token ranges `val_split` cuts.
    pub fn split(&self) -> &str {
        &self.split
    }

    /// The addition task, if that is the source.
    pub fn addition(&self) -> Option<&Addition> {
        match &self.corpus {
            Corpus::Addition(task) => Some(task),
            Corpus::Text { .. } => None,
        }
    }

    /// A fingerprint of the tokens the run reads: the lengths of the training and
    /// validation streams and a CRC-32 of 64 windows of 256 tokens spread over each,
    /// so a corpus replaced or edited between a checkpoint and its resumption is
    /// noticed (reading 32 K tokens, not the corpus). `None` for the addition task,
    /// which the spec alone fixes.
    pub fn fingerprint(&self) -> Option<String> {
        let (train, val) = self.streams()?;
        let mut crc = crc32fast::Hasher::new();
        let mut window = [0u32; 256];
        for stream in [train, val] {
            let n = stream.len();
            crc.update(&(n as u64).to_le_bytes());
            let len = window.len().min(n);
            if len == 0 {
                continue;
            }
            for i in 0..64 {
                let start = (n - len) / 63 * i;
                stream.read(start, &mut window[..len]);
                for t in &window[..len] {
                    crc.update(&t.to_le_bytes());
                }
            }
        }
        Some(format!(
            "{} + {} tokens, crc32 {:08x}",
            train.len(),
            val.len(),
            crc.finalize()
        ))
    }

    /// The training and validation token streams of a text, JSON Lines or token source.
    pub fn streams(&self) -> Option<(&Tokens, &Tokens)> {
        match &self.corpus {
            Corpus::Text { train, val } => Some((train, val)),
            Corpus::Addition(_) => None,
        }
    }

    /// The stream's starting point for `seed`.
    pub fn cursor(seed: u64) -> Cursor {
        Cursor {
            rng: Rng::derive(seed, "training data"),
            windows: 0,
        }
    }

    /// Fills `batch` with the next training sequences and advances the cursor.
    pub fn next_train(&self, cursor: &mut Cursor, batch: &mut Batch) {
        let t = self.context;
        let rows = batch.tokens.len() / t;
        for row in 0..rows {
            let (tokens, targets) = (
                &mut batch.tokens[row * t..][..t],
                &mut batch.targets[row * t..][..t],
            );
            match &self.corpus {
                Corpus::Addition(task) => task.write(task.draw(&mut cursor.rng), tokens, targets),
                Corpus::Text { train, .. } => {
                    let windows = (train.len() - t) as u64;
                    let start = if self.shuffle {
                        cursor.rng.below(windows)
                    } else {
                        (cursor.windows * t as u64) % windows
                    };
                    write_window(train, start as usize, tokens, targets);
                }
            }
            cursor.windows += 1;
        }
    }

    /// Validation batch `index` of a fixed, deterministic sequence of batches.
    pub fn val_batch(&self, index: usize, batch: &mut Batch) {
        let t = self.context;
        let rows = batch.tokens.len() / t;
        for row in 0..rows {
            let n = index * rows + row;
            let (tokens, targets) = (
                &mut batch.tokens[row * t..][..t],
                &mut batch.targets[row * t..][..t],
            );
            match &self.corpus {
                Corpus::Addition(task) => {
                    task.write(task.held_out[n % task.held_out.len()], tokens, targets)
                }
                Corpus::Text { val, train } => {
                    // With no validation split, validate on the training text (said in the log).
                    let source = if val.len() > t { val } else { train };
                    let windows = source.len() - t;
                    write_window(source, (n * t) % windows, tokens, targets);
                }
            }
        }
    }
}

fn write_window(stream: &Tokens, start: usize, tokens: &mut [u32], targets: &mut [u32]) {
    stream.read(start, tokens);
    stream.read(start + 1, targets);
}

//! `cllm prepare`: a text or JSON Lines corpus tokenized once into llm.c shards, so
//! that runs, resumptions and ranks map tokens instead of tokenizing at every start.
//!
//! The shards hold exactly the stream a run of `text(...)` or `jsonl(...)` would read
//! (documents joined as `tokenize.rs` joins them, in parallel, the same tokens on any
//! thread count) and split it where `data.val_split` would: training is the first
//! round(n · (1 − val_split)) tokens, validation the rest. So `tokens("DIR")` trains
//! bit for bit as the text source did. Files: `train_000000.bin`, … and
//! `val_000000.bin`, … (the word `val` marks validation), each llm.c's version 1
//! (a 256-int32 header: magic 20240520, version 1, the token count; uint16 tokens),
//! written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::tokenize::tokenize_documents;
use super::tokenizer::Tokenizer;
use super::{DataError, text};
use crate::spec::{Separator, Source, Spec, Vocab};

const MAGIC: i32 = 20_240_520;
const HEADER_INTS: usize = 256;

/// What to tokenize and how.
pub struct Prepare<'a> {
    pub source: &'a Path,
    /// `Some(key)`: JSON Lines, the document under `key`; `None`: text.
    pub jsonl_key: Option<&'a str>,
    pub tokenizer: Tokenizer,
    /// Where GPT-2's end-of-text token goes (`data.separator`).
    pub separator: Separator,
    pub val_split: f64,
    /// Tokens per shard file (llm.c writes 10⁸).
    pub shard_tokens: usize,
    pub out: &'a Path,
}

/// What was written.
pub struct Prepared {
    /// Bytes of the source's files.
    pub bytes: u64,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub files: Vec<PathBuf>,
}

/// Why `cllm prepare` stopped before writing a shard.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PrepareError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Data(#[from] DataError),
    #[error("`{}` already holds token shards ({first})", dir.display())]
    #[diagnostic(
        code(cllm::prepare),
        help(
            "`tokens(\"DIR\")` reads every .bin file of its folder, so old shards would join the new ones: give --out an empty or new folder"
        )
    )]
    HasShards { dir: PathBuf, first: String },
    #[error("another `cllm prepare` is writing shards into `{}`", dir.display())]
    #[diagnostic(
        code(cllm::prepare),
        help(
            "one folder takes one corpus: wait for that one to finish, or give --out another folder"
        )
    )]
    InUse { dir: PathBuf },
    #[error("cannot write `{}`", path.display())]
    #[diagnostic(
        code(cllm::prepare),
        help("check the folder's permissions and free space")
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Refuses a folder that already holds shards (`.bin` files).
fn refuse_shards(dir: &Path) -> Result<(), PrepareError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut shards: Vec<String> = (entries.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    shards.sort();
    match shards.into_iter().next() {
        Some(first) => Err(PrepareError::HasShards {
            dir: dir.to_path_buf(),
            first,
        }),
        None => Ok(()),
    }
}

/// Tokenizes `job.source` into shards in `job.out`; `read` is told the bytes read so far.
pub fn prepare(job: &Prepare<'_>, read: &mut dyn FnMut(u64)) -> Result<Prepared, PrepareError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrepareError::Write { path, source }
    };
    refuse_shards(job.out)?;
    let ext = if job.jsonl_key.is_some() {
        "jsonl"
    } else {
        "txt"
    };
    let files = text::files(job.source, ext)?;
    // Every file is looked at before anything is written (a missing file or a FIFO
    // leaves no empty folder behind).
    for file in &files {
        if let Err(source) = crate::files::map_regular(file) {
            let path = file.clone();
            return Err(DataError::Unreadable { path, source }.into());
        }
    }
    std::fs::create_dir_all(job.out).map_err(write_error(job.out))?;
    // One writer at a time (two `prepare`s would both find the folder empty), and the
    // folder looked at again under the lock.
    let _lock = match crate::files::try_lock_folder(job.out) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(PrepareError::InUse {
                dir: job.out.to_path_buf(),
            });
        }
        Err(e) => return Err(write_error(job.out)(e)),
    };
    refuse_shards(job.out)?;
    // What a `prepare` killed mid-way left: its token stream, a shard half written.
    crate::files::remove_stale_temporaries(job.out, |name| {
        name == "tokens"
            || (name.ends_with(".bin") && (name.starts_with("train_") || name.starts_with("val_")))
    });
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let each = |document: &mut dyn FnMut(&[u8])| match job.jsonl_key {
        Some(key) => text::jsonl_documents(&files, key, document),
        None => text::text_documents(&files, document),
    };
    let several = files.len() > 1 || job.jsonl_key.is_some();

    // The stream goes to a hidden file first: where validation starts is known only
    // once every token is.
    let mut name = crate::files::temporary_prefix("tokens".as_ref());
    name.push(std::process::id().to_string());
    let stream_path = job.out.join(name);
    let result = (|| -> Result<Prepared, PrepareError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&stream_path)
            .map_err(write_error(&stream_path))?;
        let mut stream = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut count = 0usize;
        let mut failed = None;
        tokenize_documents(
            &job.tokenizer,
            several,
            job.separator,
            &each,
            &mut |tokens| {
                count += tokens.len();
                let le: Vec<u8> = tokens
                    .iter()
                    .flat_map(|&t| (t as u16).to_le_bytes())
                    .collect();
                if failed.is_none()
                    && let Err(e) = stream.write_all(&le)
                {
                    failed = Some(e);
                }
            },
            &mut *read,
        )?;
        if let Some(e) = failed.or_else(|| stream.flush().err()) {
            return Err(write_error(&stream_path)(e));
        }
        drop(stream);
        let all = crate::files::map_regular(&stream_path).map_err(write_error(&stream_path))?;
        let train = ((count as f64) * (1.0 - job.val_split)).round() as usize;
        let mut written = Vec::new();
        for (split, range) in [("train", 0..train), ("val", train..count)] {
            let tokens = &all[2 * range.start..2 * range.end];
            for (i, shard) in tokens.chunks(2 * job.shard_tokens).enumerate() {
                let path = job.out.join(format!("{split}_{i:06}.bin"));
                write_shard(&path, shard).map_err(write_error(&path))?;
                written.push(path);
            }
        }
        Ok(Prepared {
            bytes,
            train_tokens: train,
            val_tokens: count - train,
            files: written,
        })
    })();
    let _ = std::fs::remove_file(&stream_path);
    result
}

/// One llm.c shard: the header, then `tokens` (uint16, little-endian, as given).
fn write_shard(path: &Path, tokens: &[u8]) -> std::io::Result<()> {
    let mut header = [0i32; HEADER_INTS];
    header[0] = MAGIC;
    header[1] = 1;
    header[2] = i32::try_from(tokens.len() / 2).expect("a shard holds fewer than 2³¹ tokens");
    let mut bytes = Vec::with_capacity(4 * HEADER_INTS + tokens.len());
    bytes.extend(header.iter().flat_map(|h| h.to_le_bytes()));
    bytes.extend_from_slice(tokens);
    crate::files::write_atomic(path, &bytes)
}

/// Tokenizing that took at least this long is worth doing once.
const SLOW_TOKENIZING_SECONDS: f64 = 2.0;

/// For a text or JSON Lines source that took `seconds` to tokenize: the note that
/// `cllm prepare` does it once.
pub(super) fn hint(spec: &Spec, base_dir: &Path, seconds: f64) -> Option<String> {
    // The flags that make `cllm prepare` read the source as the run does.
    let mut flags = String::new();
    let path = match &spec.data.source {
        Source::Text { path } => path,
        Source::Jsonl { path, key } => {
            flags.push_str(" --jsonl");
            if key != "text" {
                flags.push_str(&format!(" --key {key}"));
            }
            path
        }
        _ => return None,
    };
    let vocab = match spec.model.vocab {
        Vocab::Gpt2 => "gpt2",
        Vocab::Bytes => "bytes",
        // Shards of a word vocabulary would need its word list beside them.
        Vocab::Words { .. } => return None,
    };
    if spec.data.separator == Separator::BeforeEach {
        flags.push_str(" --separator before-each");
    }
    let path = base_dir.join(path);
    let path = path.display();
    (seconds >= SLOW_TOKENIZING_SECONDS).then(|| {
        format!(
            "tokenizing `{path}` took {seconds:.1} s, at every start, resumption and rank; \
             `cllm prepare {path} --vocab {vocab}{flags} --out DIR` does it once, then \
             `source = tokens(\"DIR\")` trains on the same tokens, memory-mapped"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_text_source_is_told_of_prepare() {
        let text = "cllm 0.1\ndata { source = text(\"specs/data/tinyshakespeare.txt\") }\n\
                    model gpt { vocab = gpt2 }\n";
        let spec = crate::spec::parse(text, "t", Path::new("."), &[]).unwrap();
        let note = hint(&spec, Path::new("project"), 2.5).unwrap();
        assert!(
            note.contains(
                "`cllm prepare project/specs/data/tinyshakespeare.txt --vocab gpt2 --out DIR`"
            ),
            "{note}"
        );
        assert_eq!(hint(&spec, Path::new("."), 1.9), None);
        let text = "cllm 0.1\ndata { source = jsonl(\"specs/data\", key = \"body\")  separator = before_each }\n\
                    model gpt { vocab = gpt2 }\n";
        let spec = crate::spec::parse(text, "t", Path::new("."), &[]).unwrap();
        let note = hint(&spec, Path::new("."), 3.0).unwrap();
        let command = "--vocab gpt2 --jsonl --key body --separator before-each --out DIR";
        assert!(note.contains(command), "{note}");
    }
}

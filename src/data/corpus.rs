//! A text, JSON Lines or token-shard source as one token stream (or two, when the
//! shards name their validation split), with the tokenizer that reads it.
//! Documents are joined as `tokenize.rs` says, in parallel over the cores.

use std::path::{Path, PathBuf};

use super::stream::Tokens;
use super::tokenize::tokenize_documents;
use super::tokenizer::{Tokenizer, WordCounts};
use super::{DataError, shards, text};
use crate::spec::{Source, Spec, Vocab};

/// What a source reads as.
pub enum Read {
    /// One stream, split by `data.val_split`.
    Whole(Tokens),
    /// Token shards whose file names say which split they are (the word `val`), with
    /// those names (training's, validation's).
    Split {
        train: Tokens,
        val: Tokens,
        names: (Vec<String>, Vec<String>),
    },
}

/// The source of `spec` (a text, JSON Lines or token source) with paths under `base_dir`.
pub fn read(spec: &Spec, base_dir: &Path) -> Result<(Tokenizer, Read), DataError> {
    let source = &spec.data.source;
    let full = base_dir.join(source.path().expect("a file source"));
    let vocab = spec.model.vocab;
    if let Source::Tokens { .. } = source {
        let tokenizer = match vocab {
            Vocab::Gpt2 => Tokenizer::Gpt2,
            // A word vocabulary is built from text; the spec check refuses it here.
            Vocab::Bytes | Vocab::Words { .. } => Tokenizer::Bytes,
        };
        return Ok((
            tokenizer,
            shard_streams(&full, spec.model.vocab_size() as usize)?,
        ));
    }
    let files = match source {
        Source::Jsonl { .. } => text::files(&full, "jsonl")?,
        _ => text::files(&full, "txt")?,
    };
    let each = |document: &mut dyn FnMut(&[u8])| match source {
        Source::Jsonl { key, .. } => text::jsonl_documents(&files, key, document),
        _ => text::text_documents(&files, document),
    };
    let tokenizer = match vocab {
        Vocab::Bytes => Tokenizer::Bytes,
        Vocab::Gpt2 => Tokenizer::Gpt2,
        Vocab::Words { size } => {
            let mut counts = WordCounts::default();
            each(&mut |document| counts.add(document))?;
            Tokenizer::Words(counts.vocab(size as usize)?)
        }
    };
    let several = files.len() > 1 || matches!(source, Source::Jsonl { .. });
    let mut tokens: Vec<u32> = Vec::new();
    // Text becomes at most one 4-byte token per byte (and a separator per document):
    // admitted against the memory there is before any is read, and reserved up front
    // so that an allocation the address space refuses is an error, not an abort.
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let needed = 4 * (bytes as u128 + files.len() as u128);
    let limit = spec
        .plan
        .memory_budget
        .min(crate::peak::machine_memory().unwrap_or(u64::MAX));
    let too_large = || DataError::TooLarge {
        path: full.clone(),
        bytes,
        needed: needed.min(u64::MAX as u128) as u64,
        limit,
    };
    if needed > limit as u128 / 2 {
        return Err(too_large());
    }
    if matches!(tokenizer, Tokenizer::Bytes) {
        tokens
            .try_reserve_exact(needed as usize / 4)
            .map_err(|_| too_large())?;
    }
    tokenize_documents(
        &tokenizer,
        several,
        spec.data.separator,
        &each,
        &mut |piece| tokens.extend_from_slice(piece),
        &mut |_| {},
    )?;
    Ok((tokenizer, Read::Whole(Tokens::owned(tokens))))
}

/// Whether a shard's file name marks the validation split: one of its words — the
/// name cut at every character that is not a letter or a digit — is `val`, `valid` or
/// `validation` (any case). llm.c's `fineweb_val_000000.bin`, nanoGPT's `val.bin`;
/// not `interval_2024.bin`, `eval.bin` or `values.bin`.
pub fn names_validation(name: &str) -> bool {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| ["val", "valid", "validation"].contains(&word.to_ascii_lowercase().as_str()))
}

/// The shards at `path`: a file, or a folder's `.bin` files, those whose name has the
/// word `val` ([`names_validation`]) the validation split when both kinds are there.
fn shard_streams(path: &Path, vocab: usize) -> Result<Read, DataError> {
    let files = text::files(path, "bin")?;
    let is_val = |f: &PathBuf| {
        f.file_name()
            .is_some_and(|n| names_validation(&n.to_string_lossy()))
    };
    let open = |files: Vec<&PathBuf>| -> Result<Tokens, DataError> {
        let parts = files.into_iter().map(|f| shards::open(f, vocab));
        Ok(Tokens::new(parts.collect::<Result<_, _>>()?))
    };
    let (val, train): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|f| is_val(f));
    if val.is_empty() || train.is_empty() {
        let all = open(files.iter().collect())?;
        if all.is_empty() {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        return Ok(Read::Whole(all));
    }
    let name_all = |files: &[&PathBuf]| -> Vec<String> {
        let name = |f: &&PathBuf| f.file_name().map(|n| n.to_string_lossy().into_owned());
        files.iter().filter_map(name).collect()
    };
    let names = (name_all(&train), name_all(&val));
    Ok(Read::Split {
        names,
        train: open(train)?,
        val: open(val)?,
    })
}

#[cfg(test)]
mod tests {
    use super::names_validation;

    #[test]
    fn validation_is_a_word_of_the_name() {
        for name in [
            "val.bin",
            "fineweb_val_000000.bin",
            "tiny_shakespeare_val.bin",
            "shard.val.bin",
            "part-VAL-3.bin",
            "valid.bin",
            "openwebtext_validation_01.bin",
        ] {
            assert!(names_validation(name), "{name}");
        }
        for name in [
            "interval_2024.bin",
            "eval.bin",
            "values.bin",
            "train.bin",
            "fineweb_train_000001.bin",
            "valve_7.bin",
            "medieval.bin",
        ] {
            assert!(!names_validation(name), "{name}");
        }
    }
}

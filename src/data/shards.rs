//! Token shards already tokenised by another tool, mapped rather than read:
//! - llm.c's `.bin`: a header of 256 little-endian int32 (magic 20240520, version 1,
//!   the token count), then that many uint16 tokens;
//! - nanoGPT's `train.bin` / `val.bin`: uint16 tokens and nothing else.
//!
//! The two are told apart by llm.c's magic number. Every token is checked against the
//! vocabulary once, at load, so a bad file is refused before training, with the byte
//! offset of the first bad token.

use std::path::Path;
use std::sync::Arc;

use super::DataError;
use super::stream::Part;
use crate::files::map_regular;

/// llm.c's shard header: 256 int32.
const HEADER_BYTES: usize = 256 * 4;
const MAGIC: i32 = 20_240_520;
/// llm.c's LLaMA-3 shards (version 7, uint32 tokens): named, not read.
const LLAMA3_MAGIC: i32 = 20_240_801;

/// The tokens of the shard at `path`, each below `vocab`.
pub fn open(path: &Path, vocab: usize) -> Result<Part, DataError> {
    let map = map_regular(path).map_err(|source| DataError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |offset: usize, reason: String| DataError::BadShard {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let word = |i: usize| i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let (offset, count) = if map.len() >= 4 && word(0) == MAGIC {
        if map.len() < HEADER_BYTES {
            return Err(bad(
                0,
                format!(
                    "llm.c's header is {HEADER_BYTES} bytes; the file has {}",
                    map.len()
                ),
            ));
        }
        if word(1) != 1 {
            return Err(bad(
                4,
                format!(
                    "llm.c shard version {}; version 1 (uint16 tokens) is read",
                    word(1)
                ),
            ));
        }
        let count =
            usize::try_from(word(2)).map_err(|_| bad(8, format!("token count {}", word(2))))?;
        let held = (map.len() - HEADER_BYTES) / 2;
        if count != held || !(map.len() - HEADER_BYTES).is_multiple_of(2) {
            return Err(bad(
                8,
                format!(
                    "the header says {count} tokens, but {} bytes follow it (truncated or padded?)",
                    map.len() - HEADER_BYTES
                ),
            ));
        }
        (HEADER_BYTES, count)
    } else {
        if map.len() >= 4 && word(0) == MAGIC.swap_bytes() {
            return Err(bad(
                0,
                "llm.c's magic, big-endian: llm.c shards are little-endian; rewrite it on a little-endian machine".into(),
            ));
        }
        if map.len() >= HEADER_BYTES && word(0) == LLAMA3_MAGIC {
            return Err(bad(
                0,
                format!(
                    "an llm.c LLaMA-3 shard (magic {LLAMA3_MAGIC}, version {}: uint32 tokens of \
                     LLaMA 3's 128 256-token vocabulary); cllm reads llm.c's GPT-2 shards \
                     (magic {MAGIC}, version 1, uint16 tokens): tokenize the corpus for GPT-2 \
                     (llm.c's data scripts' `-m gpt-2`)",
                    word(1)
                ),
            ));
        }
        if map.len() >= HEADER_BYTES && (20_000_000..30_000_000).contains(&word(0)) && word(1) == 1
        {
            return Err(bad(
                0,
                format!(
                    "a header with magic {} (llm.c's is {MAGIC}): another version of llm.c's format, not read here",
                    word(0)
                ),
            ));
        }
        if looks_like_text(&map) {
            return Err(bad(
                0,
                "it reads as text, not tokens (no NUL byte in its first 64 KiB, valid UTF-8): give text files to text(...) or jsonl(...), token shards to tokens(...)".into(),
            ));
        }
        if !map.len().is_multiple_of(2) {
            return Err(bad(
                map.len() - 1,
                "an odd number of bytes: not uint16 tokens (nanoGPT's .bin) nor an llm.c shard"
                    .into(),
            ));
        }
        (0, map.len() / 2)
    };
    let tokens = &map[offset..offset + 2 * count];
    if let Some(i) = tokens
        .chunks_exact(2)
        .position(|b| u16::from_le_bytes([b[0], b[1]]) as usize >= vocab)
    {
        let token = u16::from_le_bytes([tokens[2 * i], tokens[2 * i + 1]]);
        return Err(DataError::TokenOutOfRange {
            path: path.to_path_buf(),
            offset: offset + 2 * i,
            token: token.into(),
            vocab,
        });
    }
    Ok(Part::U16 {
        map: Arc::new(map),
        offset,
        range: 0..count,
    })
}

/// Whether `bytes` look like text rather than uint16 tokens: the first 64 KiB (all of
/// a smaller file, at least 16 bytes of it) hold no NUL byte and are valid UTF-8. Token
/// streams hold tokens below 256 (punctuation, newlines) every few tokens, each with a
/// zero high byte.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 << 10)];
    if head.len() < 16 || head.contains(&0) {
        return false;
    }
    // A cut at 64 KiB may split a character: accept an incomplete one at the end.
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() == 64 << 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llmc(tokens: &[u16], count: i32) -> Vec<u8> {
        let mut header = [0i32; 256];
        (header[0], header[1], header[2]) = (MAGIC, 1, count);
        let mut bytes: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
        bytes
    }

    fn read_all(part: &Part) -> Vec<u32> {
        let tokens = super::super::stream::Tokens::new(vec![part.clone()]);
        let mut out = vec![0; tokens.len()];
        tokens.read(0, &mut out);
        out
    }

    #[test]
    fn both_layouts_read_and_bad_files_name_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c, d) = (
            dir.path().join("a.bin"),
            dir.path().join("b.bin"),
            dir.path().join("c.bin"),
            dir.path().join("d.bin"),
        );
        std::fs::write(&a, llmc(&[50_256, 15_496, 995], 3)).unwrap();
        std::fs::write(&b, [1u8, 0, 2, 0, 3, 0]).unwrap();
        assert_eq!(read_all(&open(&a, 50_257).unwrap()), [50_256, 15_496, 995]);
        assert_eq!(read_all(&open(&b, 256).unwrap()), [1, 2, 3]);
        match open(&a, 256) {
            Err(DataError::TokenOutOfRange { offset, token, .. }) => {
                assert_eq!((offset, token), (1024, 50_256));
            }
            _ => panic!("a GPT-2 token is outside a byte vocabulary"),
        }
        std::fs::write(&c, llmc(&[1, 2], 5)).unwrap();
        assert!(matches!(
            open(&c, 256),
            Err(DataError::BadShard { offset: 8, .. })
        ));
        std::fs::write(&d, [1u8, 0, 2]).unwrap();
        assert!(matches!(
            open(&d, 256),
            Err(DataError::BadShard { offset: 2, .. })
        ));
    }

    #[test]
    fn text_a_big_endian_header_and_another_magic_are_named_not_read_as_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let says = |bytes: &[u8], what: &str| {
            let path = dir.path().join("x.bin");
            std::fs::write(&path, bytes).unwrap();
            match open(&path, 50_257) {
                Err(DataError::BadShard {
                    offset: 0, reason, ..
                }) => {
                    assert!(reason.contains(what), "{reason}")
                }
                Err(other) => panic!("{other}"),
                Ok(_) => panic!("{what}: read as tokens"),
            }
        };
        says(
            b"First Citizen:\nBefore we proceed any further, hear me speak.\n",
            "reads as text",
        );
        says(
            "caf\u{e9} \u{4e16}\u{754c} – ok, une phrase de plus.\n".as_bytes(),
            "reads as text",
        );
        let mut big = llmc(&[1, 2], 2);
        big[..4].copy_from_slice(&MAGIC.to_be_bytes());
        says(&big, "big-endian");
        let mut other = llmc(&[1, 2], 2);
        other[..4].copy_from_slice(&20_240_601i32.to_le_bytes());
        says(&other, "magic 20240601");
        // llm.c's LLaMA-3 shards: magic 20240801, version 7, uint32 tokens.
        let mut llama = llmc(&[1, 2], 2);
        llama[..4].copy_from_slice(&20_240_801i32.to_le_bytes());
        llama[4..8].copy_from_slice(&7i32.to_le_bytes());
        says(&llama, "an llm.c LLaMA-3 shard (magic 20240801, version 7");
        // Tokens (with zero high bytes) still read.
        let tokens: Vec<u8> = [11u16, 15_496, 13, 198, 995, 11, 13, 198]
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        assert_eq!(read_all(&open_bytes(&dir, &tokens)).len(), 8);
    }

    fn open_bytes(dir: &tempfile::TempDir, bytes: &[u8]) -> Part {
        let path = dir.path().join("ok.bin");
        std::fs::write(&path, bytes).unwrap();
        open(&path, 50_257).unwrap()
    }
}

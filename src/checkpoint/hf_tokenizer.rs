//! The tokenizer files of an export, so that `AutoTokenizer.from_pretrained(DIR)` and
//! `pipeline("text-generation", DIR)` tokenize as cllm did (without them transformers
//! silently builds an empty tokenizer):
//!
//! - `vocab = gpt2`: GPT-2's own `vocab.json` and `merges.txt`, rebuilt from the merge
//!   table `tiktoken-rs` compiles in (its ranks are GPT-2's ids; a token of rank r ≥ 256
//!   is the merge of the two parts that byte-pair encoding of its bytes with the ranks
//!   below r ends at), each byte spelled by GPT-2's `bytes_to_unicode` map;
//!   `tokenizer_config.json` and `generation_config.json` with `<|endoftext|>`.
//! - `vocab = bytes`: a `tokenizer.json` (Hugging Face `tokenizers` format) whose 256
//!   tokens are the bytes: byte-level pre-tokenizer and decoder, no merges.
//! - `vocab = words(…)`: none (cllm's own word vocabulary has no Hugging Face form;
//!   its list is in the checkpoint's `words` metadata).

use std::collections::HashMap;

use crate::data::Tokenizer;
use crate::spec::{Spec, Vocab};

/// GPT-2's `bytes_to_unicode`: the printable bytes stand for themselves, the other 68
/// take the code points from 256 on, in byte order.
pub fn byte_chars() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next = 256;
    std::array::from_fn(|b| {
        let b = b as u32;
        if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("a code point below 512")
        }
    })
}

/// A token's bytes spelled in [`byte_chars`].
fn spelled(bytes: &[u8], chars: &[char; 256]) -> String {
    bytes.iter().map(|&b| chars[b as usize]).collect()
}

/// Every GPT-2 token's bytes, by id (0..50 256; 50 256 is `<|endoftext|>`).
fn gpt2_tokens() -> Vec<Vec<u8>> {
    let end = crate::data::GPT2_END_OF_TEXT;
    (0..end).map(|id| Tokenizer::Gpt2.decode(&[id])).collect()
}

/// Where the merge that made `token` cut it: byte-pair encoding of its bytes with only
/// the ranks below `rank` ends at two parts.
fn merge_of(token: &[u8], rank: u32, ranks: &HashMap<&[u8], u32>) -> Option<usize> {
    // Part boundaries; merge the adjacent pair of lowest rank below `rank` until none.
    let mut cuts: Vec<usize> = (0..=token.len()).collect();
    loop {
        let best = (0..cuts.len().saturating_sub(2))
            .filter_map(|i| {
                let r = *ranks.get(&token[cuts[i]..cuts[i + 2]])?;
                (r < rank).then_some((r, i))
            })
            .min();
        match best {
            Some((_, i)) => {
                cuts.remove(i + 1);
            }
            None => break,
        }
    }
    (cuts.len() == 3).then_some(cuts[1])
}

/// GPT-2's `vocab.json` (spelled token → id) and `merges.txt` (`#version: 0.2`, then one
/// merge a line in rank order).
pub fn gpt2_vocab_and_merges() -> (serde_json::Value, String) {
    let chars = byte_chars();
    let tokens = gpt2_tokens();
    let ranks: HashMap<&[u8], u32> = (tokens.iter().enumerate())
        .map(|(id, t)| (t.as_slice(), id as u32))
        .collect();
    let mut vocab = serde_json::Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(spelled(token, &chars), id.into());
    }
    vocab.insert("<|endoftext|>".into(), crate::data::GPT2_END_OF_TEXT.into());
    let mut merges = String::from("#version: 0.2\n");
    for (rank, token) in tokens.iter().enumerate().skip(256) {
        let mid = merge_of(token, rank as u32, &ranks)
            .unwrap_or_else(|| panic!("token {rank} is no merge of two tokens"));
        let (left, right) = token.split_at(mid);
        merges.push_str(&format!(
            "{} {}\n",
            spelled(left, &chars),
            spelled(right, &chars)
        ));
    }
    (serde_json::Value::Object(vocab), merges)
}

/// A `tokenizers` `tokenizer.json` whose 256 tokens are the bytes (id = byte value).
fn bytes_tokenizer() -> serde_json::Value {
    let chars = byte_chars();
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..256).map(|b| (chars[b].to_string(), b.into())).collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
    });
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    })
}

/// The tokenizer files for `spec`'s vocabulary: (file name, contents).
pub fn files(spec: &Spec) -> Vec<(&'static str, String)> {
    let json =
        |v: serde_json::Value| format!("{}\n", serde_json::to_string_pretty(&v).expect("JSON"));
    let context = spec.model.context;
    match spec.model.vocab {
        Vocab::Gpt2 => {
            let (vocab, merges) = gpt2_vocab_and_merges();
            let end = "<|endoftext|>";
            let eot = crate::data::GPT2_END_OF_TEXT;
            vec![
                (
                    "vocab.json",
                    format!("{}\n", serde_json::to_string(&vocab).expect("JSON")),
                ),
                ("merges.txt", merges),
                (
                    "tokenizer_config.json",
                    json(serde_json::json!({
                        "tokenizer_class": "GPT2Tokenizer", "model_max_length": context,
                        "bos_token": end, "eos_token": end, "unk_token": end,
                        "add_prefix_space": false
                    })),
                ),
                (
                    "generation_config.json",
                    json(serde_json::json!({"bos_token_id": eot, "eos_token_id": eot})),
                ),
            ]
        }
        Vocab::Bytes => vec![
            ("tokenizer.json", json(bytes_tokenizer())),
            (
                "tokenizer_config.json",
                json(serde_json::json!({
                    "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context
                })),
            ),
        ],
        Vocab::Words { .. } => Vec::new(),
    }
}

/// The file a `words` vocabulary is exported as: cllm's own tokenizer, which no
/// Hugging Face model type expresses (unknown words fall back to their bytes), written
/// out whole with its rule so that any tool can re-implement it.
pub const WORDS_FILE: &str = "cllm_words.json";

/// [`WORDS_FILE`]'s contents for the word list `words` (id 256 + i is `words[i]`).
pub fn words_file(words: &[String]) -> String {
    let json = serde_json::json!({
        "tokenizer": "cllm words",
        "rule": "text is cut into maximal runs of ASCII letters and runs of other bytes; \
                 a letter run that is a listed word is the id 256 + its index in `words`, \
                 every other byte is its own id (0..255)",
        "byte_ids": 256,
        "vocab_size": 256 + words.len(),
        "words": words,
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&json).expect("JSON serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_files_are_gpt2s() {
        let chars = byte_chars();
        assert_eq!(
            (
                chars[b'!' as usize],
                chars[b' ' as usize],
                chars[b'\n' as usize]
            ),
            ('!', 'Ġ', 'Ċ')
        );
        let (vocab, merges) = gpt2_vocab_and_merges();
        let vocab = vocab.as_object().unwrap();
        assert_eq!(vocab.len(), 50_257);
        // Ids as GPT-2's vocab.json has them.
        for (token, id) in [
            ("!", 0),
            ("Ġthe", 262),
            ("Hello", 15_496),
            ("<|endoftext|>", 50_256),
        ] {
            assert_eq!(vocab[token], id, "{token}");
        }
        // GPT-2's merges.txt begins so, and has 50 000 merges.
        let lines: Vec<&str> = merges.lines().collect();
        assert_eq!(
            lines[..6],
            ["#version: 0.2", "Ġ t", "Ġ a", "h e", "i n", "r e"]
        );
        assert_eq!(lines.len(), 1 + 50_000);
        assert!(lines.contains(&"Ġt he"), "the merge that makes id 262");
    }

    #[test]
    fn the_bytes_tokenizer_has_every_byte() {
        let t = bytes_tokenizer();
        let vocab = t["model"]["vocab"].as_object().unwrap();
        assert_eq!(vocab.len(), 256);
        assert_eq!(vocab["A"], 65);
        assert_eq!(vocab["Ġ"], 32);
    }
}

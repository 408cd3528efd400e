//! Tokenizers: raw bytes (256 symbols); the most frequent words of the corpus on top
//! of the 256 bytes (every byte stays a token, so any text can be encoded); or GPT-2's
//! byte-level BPE (50 257 tokens, the merge table compiled in by `tiktoken-rs`).

use std::collections::HashMap;

use super::DataError;

/// Turns text into token ids and back.
#[derive(Clone, Debug)]
pub enum Tokenizer {
    Bytes,
    Words(WordVocab),
    Gpt2,
}

/// GPT-2's vocabulary: 50 000 merges, 256 bytes and `<|endoftext|>`.
pub const GPT2_VOCAB: usize = 50_257;
/// GPT-2's `<|endoftext|>`, which separates documents.
pub const GPT2_END_OF_TEXT: u32 = 50_256;

fn gpt2() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::r50k_base_singleton()
}

/// Token ids 0..256 are bytes; 256.. are words, most frequent first.
#[derive(Clone, Debug)]
pub struct WordVocab {
    words: Vec<Vec<u8>>,
    ids: HashMap<Vec<u8>, u32>,
}

/// A word is a maximal run of ASCII letters; everything else is bytes.
fn word_runs(text: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let is_word = text[start].is_ascii_alphabetic();
        let len = text[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic() == is_word)
            .count();
        let run = &text[start..start + len];
        start += len;
        Some((run, is_word))
    })
}

/// Word counts over every document of a corpus, for [`WordVocab`].
#[derive(Default)]
pub struct WordCounts(HashMap<Vec<u8>, u64>);

impl WordCounts {
    pub fn add(&mut self, text: &[u8]) {
        for (run, is_word) in word_runs(text) {
            if !is_word {
                continue;
            }
            match self.0.get_mut(run) {
                Some(count) => *count += 1,
                None => {
                    self.0.insert(run.to_vec(), 1);
                }
            }
        }
    }

    /// The `size − 256` most frequent words (ties broken by the word).
    pub fn vocab(self, size: usize) -> Result<WordVocab, DataError> {
        let wanted = size.saturating_sub(256);
        if self.0.len() < wanted {
            return Err(DataError::VocabTooLarge {
                size,
                distinct: self.0.len(),
            });
        }
        let mut ranked: Vec<(Vec<u8>, u64)> = self.0.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let words: Vec<Vec<u8>> = ranked.into_iter().take(wanted).map(|(w, _)| w).collect();
        let ids = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), 256 + i as u32))
            .collect();
        Ok(WordVocab { words, ids })
    }
}

impl WordVocab {
    /// The `size − 256` most frequent words of `corpus` (ties broken by the word).
    pub fn build(corpus: &[u8], size: usize) -> Result<WordVocab, DataError> {
        let mut counts = WordCounts::default();
        counts.add(corpus);
        counts.vocab(size)
    }
}

impl Tokenizer {
    /// The word list of a word vocabulary (stored in checkpoints), `None` for bytes.
    pub fn words(&self) -> Option<Vec<String>> {
        match self {
            Tokenizer::Bytes | Tokenizer::Gpt2 => None,
            Tokenizer::Words(v) => Some(
                v.words
                    .iter()
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect(),
            ),
        }
    }

    /// A word tokenizer from a stored word list.
    pub fn from_words(words: Vec<String>) -> Tokenizer {
        let words: Vec<Vec<u8>> = words.into_iter().map(String::into_bytes).collect();
        let ids = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), 256 + i as u32))
            .collect();
        Tokenizer::Words(WordVocab { words, ids })
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Words(v) => 256 + v.words.len(),
            Tokenizer::Gpt2 => GPT2_VOCAB,
        }
    }

    /// The token that separates documents, where the vocabulary has one.
    pub fn end_of_text(&self) -> Option<u32> {
        match self {
            Tokenizer::Gpt2 => Some(GPT2_END_OF_TEXT),
            Tokenizer::Bytes | Tokenizer::Words(_) => None,
        }
    }

    /// Token ids of `text`. GPT-2's BPE reads text, so bytes that are not UTF-8 are
    /// read as U+FFFD (as Python's `errors="replace"`); `<|endoftext|>` in the text is
    /// ordinary text, as nanoGPT's `encode_ordinary` has it.
    pub fn encode(&self, text: &[u8]) -> Vec<u32> {
        match self {
            Tokenizer::Gpt2 => gpt2().encode_ordinary(&String::from_utf8_lossy(text)),
            Tokenizer::Bytes => text.iter().map(|&b| b as u32).collect(),
            Tokenizer::Words(vocab) => {
                let mut out = Vec::with_capacity(text.len() / 3);
                for (run, is_word) in word_runs(text) {
                    match vocab.ids.get(run) {
                        Some(&id) if is_word => out.push(id),
                        _ => out.extend(run.iter().map(|&b| b as u32)),
                    }
                }
                out
            }
        }
    }

    /// The bytes of `tokens` (ids outside the vocabulary are skipped). GPT-2's tokens
    /// are byte sequences that may split a UTF-8 character: decode a whole sequence,
    /// not token by token, to print it.
    pub fn decode(&self, tokens: &[u32]) -> Vec<u8> {
        if let Tokenizer::Gpt2 = self {
            let known: Vec<u32> = tokens
                .iter()
                .copied()
                .filter(|&t| (t as usize) < GPT2_VOCAB)
                .collect();
            return gpt2().decode_bytes(&known).unwrap_or_default();
        }
        let mut out = Vec::with_capacity(tokens.len());
        for &t in tokens {
            match self {
                _ if t < 256 => out.push(t as u8),
                Tokenizer::Words(vocab) => {
                    out.extend(vocab.words.get(t as usize - 256).into_iter().flatten())
                }
                Tokenizer::Bytes | Tokenizer::Gpt2 => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_fall_back_to_bytes() {
        let corpus = b"the cat and the dog, the end. Cat!";
        let tok = Tokenizer::Words(WordVocab::build(corpus, 258).unwrap());
        assert_eq!(tok.vocab_size(), 258);
        let ids = tok.encode(b"the cat sat");
        assert_eq!(ids[0], 256, "`the` is the most frequent word");
        assert!(
            ids.iter().filter(|&&t| t < 256).count() >= 4,
            "unknown words are bytes"
        );
        assert_eq!(tok.decode(&ids), b"the cat sat");
    }

    #[test]
    fn gpt2_matches_the_reference_ids_and_round_trips_utf8() {
        let tok = Tokenizer::Gpt2;
        // Ids from OpenAI's tiktoken / Hugging Face's GPT2TokenizerFast for "Hello world".
        assert_eq!(tok.encode(b"Hello world"), [15496, 995]);
        let text = "naïve café — 東京 🚀\n<|endoftext|>";
        let ids = tok.encode(text.as_bytes());
        assert!(ids.iter().all(|&t| (t as usize) < GPT2_VOCAB));
        assert!(
            !ids.contains(&GPT2_END_OF_TEXT),
            "the marker in text is ordinary text"
        );
        assert_eq!(tok.decode(&ids), text.as_bytes());
        assert_eq!(tok.vocab_size(), 50_257);
        assert_eq!(tok.decode(&[GPT2_END_OF_TEXT]), b"<|endoftext|>");
        assert_eq!(
            tok.decode(&[15496, 60_000]),
            b"Hello",
            "unknown ids are skipped"
        );
    }

    #[test]
    fn a_vocabulary_larger_than_the_corpus_is_an_error() {
        assert!(matches!(
            WordVocab::build(b"one two", 300),
            Err(DataError::VocabTooLarge { distinct: 2, .. })
        ));
    }
}

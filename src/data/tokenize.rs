//! Documents → one token stream, tokenized in parallel over the cores and joined in
//! order: the same tokens on any thread count as one thread encoding each document
//! whole. Shared by every text source a run reads and by `cllm prepare`.
//!
//! Documents are joined in order. Where the vocabulary has an end-of-text token
//! (GPT-2's) it goes between two documents, or before each (`data.separator`,
//! llm.c's habit); otherwise each document of several ends with a
//! newline (added where it lacks one).
//!
//! A long document is cut into pieces encoded on their own only where that cannot
//! change a token: after a `\n` that follows a printable ASCII character and before
//! an ASCII letter. GPT-2's pre-tokenizer then ends a piece (the letter run before the
//! newline), takes the `\n` alone (a one-character whitespace run before a
//! non-space), and starts a letter run — with or without the cut — and BPE merges
//! only within a piece; an invalid UTF-8 sequence cannot span the ASCII bytes either.
//! Bytes are cut anywhere. A word vocabulary's documents are encoded whole.

use rayon::prelude::*;

use super::DataError;
use super::tokenizer::Tokenizer;
use crate::spec::Separator;

/// Bytes of documents tokenized together (one parallel batch).
const BATCH_BYTES: usize = 32 << 20;
/// The length a long document's pieces aim for.
const PIECE_BYTES: usize = 1 << 20;

/// Where `text` may be cut for `tokenizer` into pieces of about [`PIECE_BYTES`]: the
/// start of each piece after the first.
fn cuts(tokenizer: &Tokenizer, text: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut from = PIECE_BYTES;
    while from < text.len() {
        let Some(at) = (from..text.len()).find(|&p| may_cut(tokenizer, text, p)) else {
            break;
        };
        cuts.push(at);
        from = at + PIECE_BYTES;
    }
    cuts
}

/// Whether `text` may be cut before byte `p` (0 < p < len) without changing a token.
fn may_cut(tokenizer: &Tokenizer, text: &[u8], p: usize) -> bool {
    match tokenizer {
        Tokenizer::Bytes => true,
        Tokenizer::Gpt2 => {
            p >= 2
                && text[p - 1] == b'\n'
                && text[p - 2].is_ascii_graphic()
                && text[p].is_ascii_alphabetic()
        }
        Tokenizer::Words(_) => false,
    }
}

/// Calls its argument with each document of a source, in order.
pub type Documents<'a> = dyn Fn(&mut dyn FnMut(&[u8])) -> Result<(), DataError> + 'a;

/// A piece of a document, copied out of its mapped file, with where it sits.
struct Piece {
    text: Vec<u8>,
    /// The document's first piece: a separator may go before it.
    opens: bool,
    /// The document's last piece, and whether the document ends with a newline.
    closes: Option<bool>,
}

/// Tokenizes the documents `each` yields and hands the joined stream to `sink` in
/// order; `read` is told the bytes tokenized so far after every batch. Memory stays
/// about one batch ([`BATCH_BYTES`]) however long a document is.
pub fn tokenize_documents(
    tokenizer: &Tokenizer,
    several: bool,
    separator: Separator,
    each: &Documents<'_>,
    sink: &mut dyn FnMut(&[u32]),
    read: &mut dyn FnMut(u64),
) -> Result<(), DataError> {
    in_batches(tokenizer, several, separator, each, sink, read, BATCH_BYTES)
}

/// [`tokenize_documents`] with batches of `batch_limit` bytes.
fn in_batches(
    tokenizer: &Tokenizer,
    several: bool,
    separator: Separator,
    each: &Documents<'_>,
    sink: &mut dyn FnMut(&[u32]),
    read: &mut dyn FnMut(u64),
    batch_limit: usize,
) -> Result<(), DataError> {
    let newline = tokenizer.encode(b"\n");
    let end_of_text = tokenizer.end_of_text();
    let mut first = true;
    let mut done = 0u64;
    let mut batch: Vec<Piece> = Vec::new();
    let mut batch_bytes = 0;
    let mut flush = |batch: &mut Vec<Piece>, sink: &mut dyn FnMut(&[u32])| {
        let encoded: Vec<Vec<u32>> = batch
            .par_iter()
            .map(|p| tokenizer.encode(&p.text))
            .collect();
        for (piece, tokens) in batch.iter().zip(&encoded) {
            if piece.opens {
                if let Some(end) = end_of_text
                    && (!first || separator == Separator::BeforeEach)
                {
                    sink(&[end]);
                }
                first = false;
            }
            sink(tokens);
            // Without an end-of-text token, each document of several ends with a newline.
            if piece.closes == Some(false) && several && end_of_text.is_none() {
                sink(&newline);
            }
        }
        batch.clear();
    };
    each(&mut |document: &[u8]| {
        let mut starts = vec![0];
        starts.extend(cuts(tokenizer, document));
        let ends: Vec<usize> = starts[1..]
            .iter()
            .copied()
            .chain([document.len()])
            .collect();
        let last = starts.len() - 1;
        for (i, (start, end)) in starts.into_iter().zip(ends).enumerate() {
            batch.push(Piece {
                text: document[start..end].to_vec(),
                opens: i == 0,
                closes: (i == last).then(|| document.ends_with(b"\n")),
            });
            batch_bytes += end - start;
            if batch_bytes >= batch_limit {
                flush(&mut batch, sink);
                done += batch_bytes as u64;
                batch_bytes = 0;
                read(done);
            }
        }
    })?;
    flush(&mut batch, sink);
    read(done + batch_bytes as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text whose cuts fall among GPT-2's hard cases: whitespace runs before and after
    /// newlines, contractions, digits, non-ASCII letters and spaces, invalid UTF-8.
    fn tricky(len: usize) -> Vec<u8> {
        let parts: [&[u8]; 12] = [
            b"ROMEO:\nHello world.\n",
            b"  \n\nit's \n'tis\n",
            b"caf\xc3\xa9\n\xc3\xa9t\xc3\xa9\n",
            b"1984\n2001 x\n",
            b"a\xc2\xa0\nb\n",
            b"\xff\xfe broken\nutf8\n",
            b"end\n\n\n   Indented\n",
            b"tab\t\nnext\n",
            b"\xe6\x97\xa5\xe6\x9c\xac\nkanji\n",
            b"<|endoftext|>\nafter\n",
            b"x\ny\nz\n",
            b"\xf0\x9f\x98\x80\nemoji\n",
        ];
        let mut text = Vec::new();
        let mut i = 0usize;
        while text.len() < len {
            text.extend_from_slice(parts[(i * 7 + i / 3) % parts.len()]);
            i += 1;
        }
        text
    }

    fn stream(tokenizer: &Tokenizer, documents: &[Vec<u8>]) -> Vec<u32> {
        stream_with(tokenizer, documents, Separator::Between)
    }

    fn stream_with(tokenizer: &Tokenizer, documents: &[Vec<u8>], separator: Separator) -> Vec<u32> {
        let mut out = Vec::new();
        let each = |f: &mut dyn FnMut(&[u8])| {
            documents.iter().for_each(|d| f(d));
            Ok(())
        };
        // Batches of one piece: a long document spans several.
        in_batches(
            tokenizer,
            documents.len() > 1,
            separator,
            &each,
            &mut |t| out.extend_from_slice(t),
            &mut |_| {},
            PIECE_BYTES,
        )
        .unwrap();
        out
    }

    #[test]
    fn pieces_encode_as_the_whole_document() {
        let text = tricky(3 * PIECE_BYTES + 12_345);
        for tokenizer in [Tokenizer::Gpt2, Tokenizer::Bytes] {
            let cut = cuts(&tokenizer, &text);
            assert!(cut.len() >= 2, "the document is cut");
            assert_eq!(
                stream(&tokenizer, std::slice::from_ref(&text)),
                tokenizer.encode(&text)
            );
        }
    }

    #[test]
    fn every_allowed_cut_keeps_the_tokens() {
        let text = tricky(4000);
        let tokenizer = Tokenizer::Gpt2;
        let whole = tokenizer.encode(&text);
        let allowed: Vec<usize> = (1..text.len())
            .filter(|&p| may_cut(&tokenizer, &text, p))
            .collect();
        assert!(allowed.len() > 100);
        for p in allowed {
            let mut cut = tokenizer.encode(&text[..p]);
            cut.extend(tokenizer.encode(&text[p..]));
            assert_eq!(
                cut,
                whole,
                "cut at {p}: {:?}",
                String::from_utf8_lossy(&text[p.saturating_sub(8)..p + 8])
            );
        }
    }

    #[test]
    fn documents_are_joined_as_one_thread_joins_them() {
        let documents = vec![
            tricky(1000),
            b"no newline at the end".to_vec(),
            tricky(PIECE_BYTES + 77),
        ];
        for tokenizer in [Tokenizer::Gpt2, Tokenizer::Bytes] {
            let mut expected = Vec::new();
            for (i, d) in documents.iter().enumerate() {
                match tokenizer.end_of_text() {
                    Some(end) if i > 0 => expected.push(end),
                    _ => {}
                }
                expected.extend(tokenizer.encode(d));
                if tokenizer.end_of_text().is_none() && !d.ends_with(b"\n") {
                    expected.extend(tokenizer.encode(b"\n"));
                }
            }
            let threads = [1, 2, 5].map(|n| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap();
                pool.install(|| stream(&tokenizer, &documents))
            });
            assert!(threads.iter().all(|t| *t == expected));
            // llm.c's habit: the end of text before every document, the first too.
            let before_each = stream_with(&tokenizer, &documents, Separator::BeforeEach);
            match tokenizer.end_of_text() {
                Some(end) => assert_eq!(before_each, [&[end][..], &expected].concat()),
                None => assert_eq!(before_each, expected),
            }
        }
    }
}

//! Data sources beside one text file: folders of text, JSON Lines, and token shards in
//! llm.c's and nanoGPT's `.bin` layouts; documents separated by GPT-2's end-of-text
//! token; bad files refused naming the file and the byte.

use std::path::Path;
use std::process::Command;

use cllm::data::{Dataset, GPT2_END_OF_TEXT, Tokens};
use cllm::spec;

fn spec_for(source: &str, vocab: &str) -> String {
    // Short documents: no validation split unless the shards bring one.
    let split = if source.starts_with("tokens") { 10 } else { 0 };
    format!(
        "cllm 0.1\ndata {{ source = {source}  val_split = {split}% }}\n\
         model gpt {{ vocab = {vocab}  context = 4 tokens  width = 16  layers = 1  heads = 2 }}\n\
         train {{ steps = 2  batch = 2 seqs }}\n"
    )
}

fn load(dir: &Path, source: &str, vocab: &str) -> Result<Dataset, cllm::data::DataError> {
    let spec = spec::parse(&spec_for(source, vocab), "t", dir, &[]).unwrap();
    Dataset::load(&spec, dir)
}

fn all(tokens: &Tokens) -> Vec<u32> {
    let mut out = vec![0; tokens.len()];
    tokens.read(0, &mut out);
    out
}

/// llm.c's shard: 256 int32 (magic, version 1, count), then uint16 tokens.
fn llmc_shard(tokens: &[u16]) -> Vec<u8> {
    let mut header = [0i32; 256];
    (header[0], header[1], header[2]) = (20_240_520, 1, tokens.len() as i32);
    let mut bytes: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
    bytes
}

fn ramp(n: usize, salt: usize) -> Vec<u16> {
    (0..n)
        .map(|i| ((i * 7919 + salt) % 50_257) as u16)
        .collect()
}

#[test]
fn shards_in_both_layouts_train_and_name_their_splits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("llmc")).unwrap();
    std::fs::write(
        d.join("llmc/fineweb_train_000001.bin"),
        llmc_shard(&ramp(300, 1)),
    )
    .unwrap();
    std::fs::write(
        d.join("llmc/fineweb_train_000002.bin"),
        llmc_shard(&ramp(200, 2)),
    )
    .unwrap();
    std::fs::write(
        d.join("llmc/fineweb_val_000000.bin"),
        llmc_shard(&ramp(100, 3)),
    )
    .unwrap();
    let data = load(d, "tokens(\"llmc\")", "gpt2").unwrap();
    let (train, val) = data.streams().unwrap();
    // The two training shards in name order, one stream; the val shard apart.
    let wide = |v: Vec<u16>| v.into_iter().map(u32::from).collect::<Vec<u32>>();
    assert_eq!(all(train), wide([ramp(300, 1), ramp(200, 2)].concat()));
    assert_eq!(all(val), wide(ramp(100, 3)));

    // nanoGPT: headerless uint16, one file split by val_split.
    let raw: Vec<u8> = ramp(1000, 4).iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(d.join("train.bin"), &raw).unwrap();
    let data = load(d, "tokens(\"train.bin\")", "gpt2").unwrap();
    let (train, val) = data.streams().unwrap();
    assert_eq!((train.len(), val.len()), (900, 100));
    assert_eq!(all(val)[0], ramp(1000, 4)[900] as u32);
    assert_eq!(
        data.split(),
        "training tokens 0..900 (900 tokens), validation tokens 900..1 000 (100 tokens: \
         the last 10%, `data.val_split = 0.1`)"
    );

    // And a run trains on them, from the command line.
    let spec_file = d.join("shards.cllm");
    std::fs::write(&spec_file, spec_for("tokens(\"llmc\")", "gpt2")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(["run", spec_file.to_str().unwrap(), "--out"])
        .arg(d.join("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run header says which files train and which validate, and their tokens; so
    // does `check --resolved`.
    let said = "data: training 500 tokens (2 files, fineweb_train_000001.bin … \
                fineweb_train_000002.bin), validation 100 tokens (fineweb_val_000000.bin: \
                the word `val` in the name)";
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(said), "{stdout}");
    let check = Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(["check", "--resolved", spec_file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains(&format!("# {said}")), "{stdout}");
}

#[test]
fn documents_are_separated_by_end_of_text_where_the_vocabulary_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("docs.jsonl"),
        "{\"text\": \"Hello world\"}\n\n{\"text\": \"東京\", \"id\": 2}\n{\"text\": \"bye\"}\n",
    )
    .unwrap();
    let data = load(d, "jsonl(\"docs.jsonl\")", "gpt2").unwrap();
    let (train, val) = data.streams().unwrap();
    let stream = [all(train), all(val)].concat();
    let ends: Vec<usize> = (stream.iter().enumerate())
        .filter(|(_, t)| **t == GPT2_END_OF_TEXT)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ends.len(), 2, "three documents, two separators: {stream:?}");
    assert_eq!(stream[..2], [15496, 995], "`Hello world` in GPT-2's ids");
    assert_eq!(
        data.tokenizer.decode(&stream),
        "Hello world<|endoftext|>東京<|endoftext|>bye".as_bytes()
    );

    // A folder of text files: the same separator between files; bytes get newlines.
    std::fs::create_dir(d.join("books")).unwrap();
    std::fs::write(d.join("books/a.txt"), "one two three four five six").unwrap();
    std::fs::write(d.join("books/b.txt"), "seven eight nine ten eleven").unwrap();
    let data = load(d, "text(\"books\")", "gpt2").unwrap();
    let (train, val) = data.streams().unwrap();
    let stream = [all(train), all(val)].concat();
    assert_eq!(stream.iter().filter(|&&t| t == GPT2_END_OF_TEXT).count(), 1);
    let data = load(d, "text(\"books\")", "bytes").unwrap();
    let (train, val) = data.streams().unwrap();
    let bytes: Vec<u8> = [all(train), all(val)]
        .concat()
        .iter()
        .map(|&t| t as u8)
        .collect();
    assert_eq!(
        bytes,
        b"one two three four five six\nseven eight nine ten eleven\n"
    );
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"body\": 1}\n",
    )
    .unwrap();
    std::fs::write(d.join("odd.bin"), [1u8, 0, 2]).unwrap();
    std::fs::write(d.join("gpt2.bin"), llmc_shard(&[10, 20, 50_000])).unwrap();
    let mut short = llmc_shard(&[1, 2, 3]);
    short.truncate(short.len() - 2);
    std::fs::write(d.join("short.bin"), short).unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();
    let cases = [
        (
            "jsonl(\"bad.jsonl\")",
            "gpt2",
            "line 3 (byte 28): no string under \"text\"",
        ),
        (
            "jsonl(\"bad.jsonl\", key = \"body\")",
            "gpt2",
            "line 1 (byte 0)",
        ),
        (
            "tokens(\"odd.bin\")",
            "gpt2",
            "odd.bin`, byte 2: an odd number of bytes",
        ),
        (
            "tokens(\"gpt2.bin\")",
            "bytes",
            "byte 1028: token 50000 is outside the vocabulary of 256",
        ),
        (
            "tokens(\"short.bin\")",
            "gpt2",
            "the header says 3 tokens, but 4 bytes follow it",
        ),
        ("tokens(\"empty\")", "gpt2", "has no .bin files"),
    ];
    for (source, vocab, says) in cases {
        let error = match load(d, source, vocab) {
            Ok(_) => panic!("{source} loaded"),
            Err(e) => format!("{e}"),
        };
        assert!(
            error.contains(says),
            "{source}: {error:?} should say {says:?}"
        );
    }
}

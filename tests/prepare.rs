//! `cllm prepare`: a corpus tokenized once into llm.c shards holds the very streams a
//! text source gives a run (split where `val_split` splits it), byte-identical on any
//! thread count, and `tokens(DIR)` then trains bit for bit as the text did.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{checkpoint_bits, cllm};

use cllm::data::Dataset;
use cllm::spec;

fn corpus() -> PathBuf {
    std::fs::canonicalize("specs/data/tinyshakespeare.txt").unwrap()
}

/// `cllm prepare ARGS` with rayon's pool at `threads`.
fn prepare(threads: usize, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cllm"))
        .arg("prepare")
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("cllm runs")
}

fn spec_text(source: &str, vocab: &str) -> String {
    format!(
        "cllm 0.1\ndata {{ source = {source}  val_split = 0.1 }}\n\
         model gpt {{ vocab = {vocab}  context = 8 tokens  width = 16  layers = 1  heads = 2 }}\n\
         train {{ steps = 3  batch = 2 seqs }}\nplan {{ threads = 1 }}\n"
    )
}

/// Every token of the training and validation streams `source` gives a run.
fn streams(dir: &Path, source: &str, vocab: &str) -> (Vec<u32>, Vec<u32>) {
    let spec = spec::parse(&spec_text(source, vocab), "t", dir, &[]).unwrap();
    let data = Dataset::load(&spec, dir).unwrap();
    let (train, val) = data.streams().unwrap();
    let all = |t: &cllm::data::Tokens| {
        let mut out = vec![0; t.len()];
        t.read(0, &mut out);
        out
    };
    (all(train), all(val))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn shards_hold_the_text_sources_streams_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = corpus();
    let text_source = format!("text(\"{}\")", text.display());
    for vocab in ["gpt2", "bytes"] {
        let outs: Vec<PathBuf> = [1, 3]
            .iter()
            .map(|t| d.join(format!("{vocab}-{t}")))
            .collect();
        for (threads, out) in [1, 3].iter().zip(&outs) {
            let run = prepare(
                *threads,
                &[
                    text.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                    "--vocab",
                    vocab,
                    "--shard-tokens",
                    "100000",
                ],
            );
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            assert!(String::from_utf8_lossy(&run.stdout).contains("tokens(\""));
        }
        // Byte-identical files on 1 and 3 threads; several training shards.
        assert_eq!(names(&outs[0]), names(&outs[1]));
        for name in names(&outs[0]) {
            let (a, b) = (outs[0].join(&name), outs[1].join(&name));
            assert_eq!(
                std::fs::read(a).unwrap(),
                std::fs::read(b).unwrap(),
                "{name}"
            );
        }
        let listed = names(&outs[0]);
        assert!(
            listed.iter().filter(|n| n.starts_with("train_")).count() >= 3,
            "{listed:?}"
        );
        assert!(listed.contains(&"val_000000.bin".to_string()), "{listed:?}");
        // The very streams the text source gives, split where it splits them.
        let from_shards = format!("tokens(\"{}\")", outs[0].display());
        assert_eq!(
            streams(d, &from_shards, vocab),
            streams(d, &text_source, vocab),
            "{vocab}"
        );
    }

    // And a run trains bit for bit as from the text.
    let run = |source: &str, name: &str| {
        let spec_file = d.join(format!("{name}.cllm"));
        std::fs::write(&spec_file, spec_text(source, "gpt2")).unwrap();
        let out = d.join(name);
        let done = cllm(&[
            "run",
            spec_file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        checkpoint_bits(&out)
    };
    let shards = format!("tokens(\"{}\")", d.join("gpt2-1").display());
    assert_eq!(run(&text_source, "from-text"), run(&shards, "from-shards"));
}

#[test]
fn json_lines_documents_are_separated_as_a_run_separates_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: String = (0..400)
        .map(|i| {
            format!("{{\"body\": \"Document {i}: all the world's a stage.\\nAnd all the men\"}}\n")
        })
        .collect();
    std::fs::write(d.join("docs.jsonl"), lines).unwrap();
    let out = d.join("shards");
    let docs = d.join("docs.jsonl");
    let run = prepare(
        2,
        &[
            docs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--key",
            "body",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let jsonl = "jsonl(\"docs.jsonl\", key = \"body\")";
    let from_shards = format!("tokens(\"{}\")", out.display());
    assert_eq!(streams(d, &from_shards, "gpt2"), streams(d, jsonl, "gpt2"));

    // llm.c's habit, the end of text before each document, as `data.separator` has it.
    let llmc = d.join("llmc");
    let run = prepare(
        2,
        &[
            docs.to_str().unwrap(),
            "--out",
            llmc.to_str().unwrap(),
            "--key",
            "body",
            "--separator",
            "before-each",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let from_llmc = format!("tokens(\"{}\")", llmc.display());
    let before_each = streams(d, &format!("{jsonl}  separator = before_each"), "gpt2");
    assert_eq!(before_each.0[0], cllm::data::GPT2_END_OF_TEXT);
    assert_eq!(streams(d, &from_llmc, "gpt2"), before_each);
    assert_ne!(before_each, streams(d, jsonl, "gpt2"));

    // Old shards in the folder would join the new ones: refused, nothing written.
    let again = prepare(1, &[docs.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already holds token shards"), "{stderr}");
    assert_eq!(names(&out), ["train_000000.bin", "val_000000.bin"]);
}

#[test]
fn a_missing_or_irregular_source_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.txt");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for source in [dir.path().join("missing.txt"), fifo] {
        let out = dir.path().join("shards");
        let run = prepare(
            1,
            &[source.to_str().unwrap(), "--out", out.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot read"), "{stderr}");
        assert!(!out.exists(), "nothing is written for {}", source.display());
    }
}

/// `cllm prepare` of the corpus as bytes into `out`, on one thread.
fn bytes_into(out: &Path) -> Output {
    let corpus = corpus();
    let out = out.to_str().unwrap();
    prepare(
        1,
        &[corpus.to_str().unwrap(), "--vocab", "bytes", "--out", out],
    )
}

#[test]
fn a_folder_another_prepare_is_writing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shards");
    std::fs::create_dir(&out).unwrap();
    // Two at once both found the folder empty and mixed their shards, each saying it
    // had written its own. The folder is what a `prepare` locks (flock): hold it here.
    let held = std::fs::File::open(&out).unwrap();
    held.lock().unwrap();
    let second = bytes_into(&out);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another `cllm prepare`"), "{stderr}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    drop(held);
    let first = bytes_into(&out);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
}

#[test]
fn what_a_killed_prepare_left_is_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shards");
    std::fs::create_dir(&out).unwrap();
    // A SIGTERM mid-way left its hidden token stream (gigabytes, for a big corpus).
    let left = [".tokens.tmp.4242", ".train_000003.bin.tmp.4242.7"];
    let foreign = [".notes.tmp.1", "notes.txt"];
    for name in left.iter().chain(&foreign) {
        std::fs::write(out.join(name), b"x").unwrap();
    }
    let run = bytes_into(&out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in left {
        assert!(!out.join(name).exists(), "{name} is left");
    }
    for name in foreign {
        assert!(out.join(name).exists(), "{name} was removed");
    }
}

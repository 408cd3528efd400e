//! `cllm prepare`: tokenize a corpus once into llm.c shards (`data/prepare.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use cllm::data::{Prepare, Tokenizer, prepare};
use cllm::spec::Separator;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// A text file, a JSON Lines file, or a folder of `*.txt` (or `*.jsonl`) files.
    source: PathBuf,
    /// Write the shards into this folder (created when missing; must hold no `.bin`).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The vocabulary: `gpt2` (GPT-2's BPE) or `bytes`.
    #[arg(long, default_value = "gpt2", value_parser = ["gpt2", "bytes"])]
    vocab: String,
    /// Fraction of the tokens (the last ones) written as validation shards, as
    /// `data.val_split` cuts a text source.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    val_split: f64,
    /// Read JSON Lines (the default for a `.jsonl` file or a folder of them).
    #[arg(long)]
    jsonl: bool,
    /// The JSON Lines key that holds each document's text.
    #[arg(long, default_value = "text")]
    key: String,
    /// Where GPT-2's end-of-text token goes: between documents, or before each (llm.c's
    /// scripts); as `data.separator` puts it for a text source.
    #[arg(long, default_value = "between", value_parser = ["between", "before-each"])]
    separator: String,
    /// Tokens per shard file (llm.c's scripts write 100 M).
    #[arg(long, default_value_t = 100_000_000, value_name = "N")]
    shard_tokens: usize,
}

pub fn prepare_shards(args: PrepareArgs) -> miette::Result<ExitCode> {
    if !(0.0..1.0).contains(&args.val_split) {
        miette::bail!(
            help = "e.g. `--val-split 0.1`: the last 10% validate; 0 writes training shards only",
            "--val-split must be in [0, 1), found {}",
            args.val_split
        );
    }
    if args.shard_tokens == 0 || args.shard_tokens > i32::MAX as usize {
        miette::bail!(
            help = "llm.c's header counts tokens in an int32; its scripts write 100 000 000",
            "--shard-tokens must be between 1 and {}, found {}",
            i32::MAX,
            args.shard_tokens
        );
    }
    if args.separator == "before-each" && args.vocab != "gpt2" {
        miette::bail!(
            help =
                "`--separator` places GPT-2's end-of-text token; byte documents end with a newline",
            "--separator before-each needs --vocab gpt2"
        );
    }
    let jsonl = args.jsonl || is_jsonl(&args.source);
    let tokenizer = match args.vocab.as_str() {
        "bytes" => Tokenizer::Bytes,
        _ => Tokenizer::Gpt2,
    };
    let job = Prepare {
        source: &args.source,
        jsonl_key: jsonl.then_some(args.key.as_str()),
        tokenizer,
        separator: match args.separator.as_str() {
            "before-each" => Separator::BeforeEach,
            _ => Separator::Between,
        },
        val_split: args.val_split,
        shard_tokens: args.shard_tokens,
        out: &args.out,
    };
    let bar = ProgressBar::new(source_bytes(&args.source, jsonl));
    bar.set_style(
        ProgressStyle::with_template(
            "tokenizing {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    let started = Instant::now();
    let prepared = prepare(&job, &mut |read| bar.set_position(read));
    bar.finish_and_clear();
    let prepared = prepared?;
    let seconds = started.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    cllm::outln!(
        "tokenized {:.1} MB in {seconds:.1} s ({:.1} MB/s on {threads} thread(s)): {} training tokens, {} validation tokens (the last {}%), {} file(s) in {}",
        prepared.bytes as f64 / 1e6,
        prepared.bytes as f64 / 1e6 / seconds.max(1e-9),
        prepared.train_tokens,
        prepared.val_tokens,
        100.0 * args.val_split,
        prepared.files.len(),
        args.out.display()
    );
    let vocab = match args.vocab.as_str() {
        "bytes" => "  model gpt { vocab = bytes }",
        _ => "  model gpt { vocab = gpt2 }",
    };
    cllm::outln!(
        "train on them with: data {{ source = tokens(\"{}\") }}{vocab}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `source` is JSON Lines: a `.jsonl` file, or a folder with `.jsonl` files and
/// no `.txt` files.
fn is_jsonl(source: &std::path::Path) -> bool {
    let has = |ext: &str| {
        std::fs::read_dir(source).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == ext))
        })
    };
    match source.is_dir() {
        true => has("jsonl") && !has("txt"),
        false => source.extension().is_some_and(|x| x == "jsonl"),
    }
}

/// The bytes the progress bar counts to (the source's files).
fn source_bytes(source: &std::path::Path, jsonl: bool) -> u64 {
    let ext = if jsonl { "jsonl" } else { "txt" };
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    match std::fs::read_dir(source) {
        Ok(entries) => (entries.flatten())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .map(|p| size(&p))
            .sum(),
        Err(_) => size(source),
    }
}

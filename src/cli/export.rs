//! `cllm export`: a run's model for other tools (Hugging Face `transformers`).

use std::path::PathBuf;
use std::process::ExitCode;

use cllm::checkpoint::{export_hf, hf_tokenizer};
use cllm::graph;
use cllm::spec::Vocab;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A run folder (or its checkpoint.safetensors).
    run: PathBuf,
    /// Write `model.safetensors` and `config.json` for `GPT2LMHeadModel` into this folder.
    #[arg(long, value_name = "DIR", required = true)]
    hf: PathBuf,
}

pub fn export(args: ExportArgs) -> miette::Result<ExitCode> {
    if let Ok(meta) = std::fs::metadata(&args.hf)
        && !meta.is_dir()
    {
        miette::bail!(
            help = "give --hf a folder (it is created when missing)",
            "--hf `{}` is a file, not a folder",
            args.hf.display()
        );
    }
    let super::stored::StoredRun {
        file,
        spec,
        checkpoint: mut stored,
        ..
    } = super::stored::open(&args.run)?;
    let graph = graph::build(&spec, 1);
    let mut params = Vec::with_capacity(graph.params.len());
    for p in &graph.params {
        let values = stored.take(&file, &p.name, &p.shape)?;
        params.push((p.name.clone(), p.shape.clone(), values));
    }
    // One export a folder at a time: two at once left one model's weights beside the
    // other's config.json.
    let in_folder =
        |e: std::io::Error| miette::miette!("cannot write into `{}`: {e}", args.hf.display());
    std::fs::create_dir_all(&args.hf).map_err(in_folder)?;
    let Some(_lock) = cllm::files::try_lock_folder(&args.hf).map_err(in_folder)? else {
        miette::bail!(
            help = "wait for it to finish, or give --hf another folder",
            "another `cllm export` is writing into `{}`",
            args.hf.display()
        );
    };
    let mut written = export_hf(&spec, &params, &args.hf)?;
    if let Some(words) = stored.metadata.get("words") {
        let words: Vec<String> = serde_json::from_str(words).map_err(|e| {
            miette::miette!("the word list in `{}` is unreadable: {e}", file.display())
        })?;
        let path = args.hf.join(hf_tokenizer::WORDS_FILE);
        let text = hf_tokenizer::words_file(&words);
        cllm::files::write_atomic(&path, text.as_bytes())
            .map_err(|e| miette::miette!("cannot write `{}`: {e}", path.display()))?;
        written.push(path);
    }
    let step = stored.metadata.get("step").map_or("?", String::as_str);
    let names: Vec<String> = (written.iter())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    // What an export of these files killed mid-write left (still under the lock).
    cllm::files::remove_stale_temporaries(&args.hf, |name| names.iter().any(|n| n == name));
    cllm::errln!(
        "wrote {} into {} (step {step} of {})",
        names.join(", "),
        args.hf.display(),
        file.display()
    );
    let tokenizer = match spec.model.vocab {
        Vocab::Gpt2 => {
            "AutoTokenizer.from_pretrained(the same folder) tokenizes for it (GPT-2's BPE)"
        }
        Vocab::Bytes => {
            "AutoTokenizer.from_pretrained(the same folder) tokenizes for it (its tokens are the bytes)"
        }
        Vocab::Words { .. } => {
            "its word vocabulary is cllm's own, which no Hugging Face tokenizer expresses: cllm_words.json holds the word list and the rule"
        }
    };
    cllm::errln!(
        "load with: GPT2LMHeadModel.from_pretrained(\"{}\"); {tokenizer}",
        args.hf.display()
    );
    Ok(ExitCode::SUCCESS)
}

//! `cllm sample`: generate text from a checkpoint, with a key/value cache.

use cllm::console::{Stream, write_bytes};
use std::path::PathBuf;
use std::process::ExitCode;

use cllm::data::Tokenizer;
use cllm::graph;
use cllm::rng::Rng;
use cllm::runtime::sampler::{Sampler, Sampling};

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A run folder (or its checkpoint.safetensors).
    checkpoint: PathBuf,
    /// Text to continue (default: the spec's `sample.prompt`).
    #[arg(long)]
    prompt: Option<String>,
    /// Tokens to generate.
    #[arg(long)]
    tokens: Option<u64>,
    /// Softmax temperature; 0 is greedy.
    #[arg(long)]
    temperature: Option<f64>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<u64>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long)]
    top_p: Option<f64>,
    /// Sampling seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override a key of the run's stored spec, e.g. `--set sample.prompt="ROMEO:"`
    /// (repeatable; the options above win over it).
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    overrides: Vec<String>,
    /// Print decoding speed to stderr: positions per second, and against the bound of
    /// reading every weight once per position, at the speed the sampler's threads sweep them.
    #[arg(long)]
    stats: bool,
    /// Go on past the end-of-text token (GPT-2's 50256, `<|endoftext|>`): by default
    /// sampling stops there, as Hugging Face's `generate` does.
    #[arg(long)]
    no_stop: bool,
}

/// The most tokens one `cllm sample` generates (a count past it is a mistake: at
/// thousands of tokens a second, 10⁸ take a day).
const MOST_TOKENS: u64 = 100_000_000;

pub fn sample(args: SampleArgs) -> miette::Result<ExitCode> {
    generate(&args).map(|()| ExitCode::SUCCESS)
}

fn generate(args: &SampleArgs) -> miette::Result<()> {
    // A checkpoint is input: its stored spec is checked like a spec file (`open`), and
    // again with `--set` on top (the run's files are not needed to sample).
    let super::stored::StoredRun {
        file: path,
        spec,
        checkpoint: mut stored,
        ..
    } = super::stored::open(&args.checkpoint)?;
    let name = format!("the spec stored in {}", path.display());
    let spec = cllm::spec::check_stored_with(&spec, &name, &args.overrides)?;
    let tokenizer = match stored.metadata.get("words") {
        Some(words) => Tokenizer::from_words(serde_json::from_str(words).map_err(|e| {
            miette::miette!("the word list in `{}` is unreadable: {e}", path.display())
        })?),
        None if spec.model.vocab == cllm::spec::Vocab::Gpt2 => Tokenizer::Gpt2,
        None => Tokenizer::Bytes,
    };
    let graph = graph::build(&spec, 1);
    let mut params = Vec::with_capacity(graph.params.len());
    for p in &graph.params {
        params.push(stored.take(&path, &p.name, &p.shape)?);
    }
    let s = &spec.sample;
    let sampling = Sampling {
        temperature: args.temperature.unwrap_or(s.temperature),
        top_k: args.top_k.or(s.top_k).map(|k| k as usize),
        top_p: args.top_p.unwrap_or(s.top_p),
    };
    if !(sampling.temperature.is_finite() && sampling.temperature >= 0.0) {
        miette::bail!(
            "--temperature must be a finite number ≥ 0 (0 is greedy), not {}",
            sampling.temperature
        );
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        miette::bail!("--top-p must be in (0, 1], not {}", sampling.top_p);
    }
    let prompt_text = args.prompt.clone().unwrap_or_else(|| s.prompt.clone());
    let prompt = tokenizer.encode(prompt_text.as_bytes());
    if prompt.is_empty() {
        miette::bail!(help = "give a prompt with --prompt", "the prompt is empty");
    }
    let count = args.tokens.unwrap_or(s.tokens);
    if count > MOST_TOKENS {
        let from = match args.tokens {
            Some(_) => "--tokens",
            None => "`sample.tokens`",
        };
        miette::bail!(
            help = format!(
                "ask for at most {MOST_TOKENS} tokens (the output streams: Ctrl-C stops it)"
            ),
            "{from} asks for {count} tokens, more than one sampling call generates"
        );
    }
    let count = count as usize;
    let mut rng = Rng::new(args.seed.unwrap_or(s.seed));
    let mask = cllm::plan::attention_pattern(&spec)
        .map_err(|e| miette::miette!("{e}"))?
        .map(|p| p.mask());
    let mut sampler = Sampler::new(
        &graph,
        (spec.plan.gemm, spec.train.precision),
        params.iter().map(Vec::as_slice).collect(),
    )
    .map_err(|e| miette::miette!("{e}"))?
    .with_mask(mask);
    // The text streams out token by token (each token's bytes follow the last's, so
    // the concatenation is the decoding of the whole).
    write_bytes(Stream::Stdout, prompt_text.as_bytes());
    let started = std::time::Instant::now();
    let end = tokenizer.end_of_text().filter(|_| !args.no_stop);
    let out = sampler.generate(&prompt, count, sampling, &mut rng, |token| {
        // The end of the text stops generating, unprinted; so does a closed pipe
        // (`| head`).
        Some(token) == end || !write_bytes(Stream::Stdout, &tokenizer.decode(&[token]))
    });
    let seconds = started.elapsed().as_secs_f64();
    write_bytes(Stream::Stdout, b"\n");
    if end.is_some() && out.last().copied() == end {
        cllm::errln!(
            "(the end of the text after {} token(s); --no-stop samples past it)",
            out.len() - 1
        );
    }
    if args.stats {
        // Every position fed (the prompt's and each generated token but the last) runs
        // the whole model once and so reads every weight once.
        let positions = (prompt.len() + out.len()).saturating_sub(1).max(1);
        // The sampler's products read them over this pool's threads, from wherever they
        // sit (a large cache holds a small model's): the bound is those threads sweeping
        // these very weights the same way.
        let weight_bytes = 4 * params.iter().map(Vec::len).sum::<usize>();
        let slices: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        let read = cllm::peak::sweep_gbps(&slices);
        let bound = read * 1e9 / weight_bytes as f64;
        let rate = positions as f64 / seconds;
        cllm::errln!(
            "decoded {positions} positions in {:.2} s: {rate:.1} per second, {:.2} ms each; \
             weights {:.1} MB a position, read at {read:.1} GB/s on {} thread(s) (a sweep of \
             the weights, as decoding reads them) → bound {bound:.1} per second; {:.0}% of it",
            seconds,
            1e3 / rate,
            weight_bytes as f64 / 1e6,
            rayon::current_num_threads(),
            100.0 * rate / bound
        );
    }
    Ok(())
}

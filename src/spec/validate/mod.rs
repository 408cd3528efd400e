//! Range and consistency checks on a lowered [`Spec`]. Each failed check points at
//! the key the user wrote (or the first of several keys that together conflict).

use std::path::Path;

mod attention;
mod data;

use super::ast::{Span, format_number};
use super::choices::Vocab;
use super::error::Problem;
use super::lower::KeySpans;
use super::run_choices::{Optimizer, Schedule, Threads};
use super::types::Spec;
use attention::attention;
use data::data;

/// The most worker threads a spec may ask for: every one is an OS thread, and a
/// million of them failed to start (a panic) before this bound.
pub const MAX_THREADS: u64 = 1024;

/// The most evaluation batches a spec may ask for per evaluation (10¹² ran for hours
/// without a word before this bound).
pub const MAX_EVAL_BATCHES: u64 = 10_000;

struct Checker<'a> {
    spans: &'a KeySpans,
    /// Where to point when none of the keys involved was written (the version line).
    fallback: Span,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// Records a problem unless `ok`; `keys` (`block.key`) say where to point, first given wins.
    fn require(&mut self, ok: bool, keys: &[&str], message: String, help: &str) {
        // One key: its value is out of range. Several: it disagrees with the others.
        let label = match keys {
            [_, others @ ..] if !others.is_empty() => {
                format!("does not fit `{}`", others.join("`, `"))
            }
            _ => "out of range".to_string(),
        };
        self.require_labelled(ok, keys, &label, message, help);
    }

    /// `require` with the label under the value said outright (a missing file is not
    /// out of range).
    fn require_labelled(
        &mut self,
        ok: bool,
        keys: &[&str],
        label: &str,
        message: String,
        help: &str,
    ) {
        if ok {
            return;
        }
        let (origin, span) = self.spans.first_given(keys).unwrap_or((0, self.fallback));
        let problem = Problem::new(span, message, label)
            .with_help(help)
            .in_origin(origin);
        self.problems.push(problem);
    }
}

/// Every range and consistency check; `base_dir` resolves relative paths (`None`: the
/// files are not checked, as for a checkpoint's stored spec, whose files stayed behind).
pub fn validate(
    spec: &Spec,
    spans: &KeySpans,
    base_dir: Option<&Path>,
    fallback: Span,
) -> Vec<Problem> {
    let mut c = Checker {
        spans,
        fallback,
        problems: Vec::new(),
    };
    model(&mut c, spec);
    data(&mut c, spec, base_dir);
    train(&mut c, spec);
    let s = &spec.sample;
    c.require(
        s.temperature >= 0.0,
        &["sample.temperature"],
        "temperature must be ≥ 0".into(),
        "0 is greedy decoding; 1 samples the model's distribution",
    );
    c.require(
        s.top_p > 0.0 && s.top_p <= 1.0,
        &["sample.top_p"],
        format!("top_p must be in (0, 1], found {}", format_number(s.top_p)),
        "1 keeps every token; 0.9 keeps the most likely 90% of the mass",
    );
    c.require(
        s.top_k != Some(0),
        &["sample.top_k"],
        "top_k must be at least 1".into(),
        "write `top_k = none` to keep every token",
    );
    c.require(
        s.tokens >= 1,
        &["sample.tokens"],
        "tokens must be at least 1".into(),
        "how many tokens to generate, e.g. `tokens = 200`",
    );
    c.require(
        spec.eval.every >= 1,
        &["eval.every"],
        "eval.every must be at least 1 step".into(),
        "e.g. `every = 250 steps`",
    );
    c.require(
        (1..=MAX_EVAL_BATCHES).contains(&spec.eval.batches),
        &["eval.batches"],
        format!("eval.batches must be between 1 and {MAX_EVAL_BATCHES} (each is a forward pass over a batch)"),
        "e.g. `batches = 8`",
    );
    c.require(
        spec.checkpoint.every >= 1,
        &["checkpoint.every"],
        "checkpoint.every must be at least 1 step".into(),
        "e.g. `every = 500 steps`",
    );
    let p = &spec.plan;
    c.require(
        p.threads != Threads::Count(0),
        &["plan.threads"],
        "threads must be at least 1".into(),
        "write `threads = auto` to use every core",
    );
    c.require(
        !matches!(p.threads, Threads::Count(n) if n > MAX_THREADS),
        &["plan.threads"],
        format!("threads must be at most {MAX_THREADS} (more than any machine cllm runs on has cores; each is an OS thread)"),
        "write `threads = auto` to use every core",
    );
    let micro_batch = spec.train.micro_batch();
    c.require(
        p.shards >= 1 && micro_batch.is_multiple_of(p.shards),
        &["plan.shards", "train.batch", "train.accumulate"],
        format!(
            "shards ({}) must divide the micro-batch of {micro_batch} sequences (batch / accumulate)",
            p.shards
        ),
        "shards split each micro-batch into equal parts: choose a divisor of batch / accumulate",
    );
    c.require(
        p.stages >= 1 && p.stages <= spec.model.layers.max(1),
        &["plan.stages", "model.layers"],
        format!(
            "stages ({}) must be between 1 and the model's {} layer(s): a stage holds at least one",
            p.stages, spec.model.layers
        ),
        "write `stages = 1` for no pipeline, or at most one stage per layer",
    );
    c.require(
        p.memory_budget > 0,
        &["plan.memory_budget"],
        "memory_budget must be positive".into(),
        "e.g. `memory_budget = 2 GiB`",
    );
    c.problems
}

fn model(c: &mut Checker<'_>, spec: &Spec) {
    let m = &spec.model;
    c.require(
        m.context >= 2,
        &["model.context"],
        format!("context must be at least 2 tokens, found {}", m.context),
        "a model needs at least one token to predict the next from",
    );
    c.require(
        m.width >= 1,
        &["model.width"],
        "width must be at least 1".into(),
        "e.g. `width = 128`",
    );
    c.require(
        m.layers >= 1,
        &["model.layers"],
        "layers must be at least 1".into(),
        "e.g. `layers = 4`",
    );
    c.require(
        m.heads >= 1,
        &["model.heads"],
        "heads must be at least 1".into(),
        "e.g. `heads = 4`",
    );
    if m.heads >= 1 && !m.width.is_multiple_of(m.heads) {
        let suggestion = super::largest_divisor_at_most(m.width, m.heads);
        c.require(
            m.width.is_multiple_of(m.heads),
            &["model.heads", "model.width"],
            format!("width {} is not a multiple of heads {}", m.width, m.heads),
            &format!("each head gets width / heads channels; try `heads = {suggestion}`"),
        );
    }
    let hidden = m.width as f64 * m.mlp;
    c.require(
        m.mlp > 0.0 && hidden.fract() == 0.0,
        &["model.mlp", "model.width"],
        format!(
            "mlp {}x of width {} is not a whole number of channels",
            format_number(m.mlp),
            m.width
        ),
        "choose a ratio such that width × mlp is whole, e.g. `mlp = 4x`",
    );
    c.require(
        m.ln_eps > 0.0,
        &["model.ln_eps"],
        "ln_eps must be positive".into(),
        "the usual value is `ln_eps = 1e-5`",
    );
    c.require(
        m.init_std > 0.0,
        &["model.init_std"],
        "init_std must be positive".into(),
        "GPT-2 uses `init_std = 0.02`",
    );
    if let Vocab::Words { size } = spec.model.vocab {
        c.require(
            size > 256,
            &["model.vocab"],
            format!("a word vocabulary needs more than the 256 fallback bytes, found size {size}"),
            "e.g. `vocab = words(size = 4096)`",
        );
    }
    attention(c, spec);
}

fn train(c: &mut Checker<'_>, spec: &Spec) {
    let t = &spec.train;
    c.require(
        t.steps >= 1,
        &["train.steps"],
        "steps must be at least 1".into(),
        "e.g. `steps = 2000`",
    );
    c.require(
        t.batch >= 1,
        &["train.batch"],
        "batch must be at least 1 sequence".into(),
        "e.g. `batch = 16 seqs`",
    );
    c.require(
        t.accumulate >= 1 && t.batch.is_multiple_of(t.accumulate.max(1)),
        &["train.accumulate", "train.batch"],
        format!(
            "accumulate ({}) must divide batch ({})",
            t.accumulate, t.batch
        ),
        "each step runs `accumulate` micro-batches of batch / accumulate sequences",
    );
    c.require(
        t.log_every >= 1,
        &["train.log_every"],
        "log_every must be at least 1 step".into(),
        "e.g. `log_every = 10 steps`",
    );
    c.require(
        t.clip_grad.is_none_or(|g| g > 0.0),
        &["train.clip_grad"],
        "clip_grad must be positive".into(),
        "write `clip_grad = none` to turn clipping off",
    );
    let Optimizer::AdamW {
        lr,
        betas,
        eps,
        weight_decay,
    } = t.optimizer;
    let opt = &["train.optimizer"];
    c.require(
        lr > 0.0,
        opt,
        format!("lr must be positive, found {}", format_number(lr)),
        "a typical value is `adamw(lr = 1e-3)`",
    );
    let beta_ok = |b: f64| (0.0..1.0).contains(&b);
    c.require(
        beta_ok(betas.0) && beta_ok(betas.1),
        opt,
        "betas must each be in [0, 1)".into(),
        "the usual values are `betas = (0.9, 0.95)`",
    );
    c.require(
        eps > 0.0,
        opt,
        "eps must be positive".into(),
        "the usual value is `eps = 1e-8`",
    );
    c.require(
        weight_decay >= 0.0,
        opt,
        "weight_decay must be ≥ 0".into(),
        "0 turns weight decay off; 0.1 is usual",
    );
    if let Schedule::Linear {
        min_lr: Some(min_lr),
        ..
    }
    | Schedule::Cosine {
        min_lr: Some(min_lr),
        ..
    } = t.schedule
    {
        c.require(
            (0.0..=lr).contains(&min_lr),
            &["train.schedule", "train.optimizer"],
            format!(
                "min_lr {} must be between 0 and lr {}",
                format_number(min_lr),
                format_number(lr)
            ),
            "the schedule decays from lr down to min_lr",
        );
    }
}

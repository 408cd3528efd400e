//! The typed spec: one struct per block, every key with one documented default.
//!
//! Each block is declared once with [`spec_block!`]: the field, its type, the unit
//! words it accepts and its default. The macro derives the struct, its `Default`
//! (the single source of every default), the list of known keys (for "did you mean"),
//! reading a key from syntax and writing it back.

use serde::{Deserialize, Serialize};

use super::ast::{Spanned, Value};
use super::choices::{Attention, Separator, Source, Vocab};
use super::convert::{Field, Unit};
use super::error::Problem;
use super::run_choices::{Gemm, Optimizer, Schedule, Threads};
use super::weights::Weights;
use cllm_kernels::bf16::Precision;

macro_rules! unit {
    () => {
        Unit::None
    };
    ($unit:ident) => {
        Unit::$unit
    };
}

macro_rules! spec_block {
    (
        $(#[$meta:meta])*
        pub struct $name:ident = $block:literal {
            $(
                #[doc = $doc:literal]
                $field:ident : $ty:ty $([$unit:ident])? = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( #[doc = $doc] pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// The block's name in a spec.
            pub const BLOCK: &'static str = $block;
            /// Every key of the block, in printing order.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
            /// One line of documentation per key, in the order of `KEYS`.
            pub const DOCS: &'static [&'static str] = &[$($doc.trim_ascii()),*];

            /// Sets `key` from `value`; `Ok(false)` when the block has no such key.
            pub fn set(&mut self, key: &str, value: &Spanned<Value>) -> Result<bool, Problem> {
                match key {
                    $( stringify!($field) => {
                        self.$field = Field::read(value, unit!($($unit)?))?;
                        Ok(true)
                    } )*
                    _ => Ok(false),
                }
            }

            /// Every key with its value as syntax, in the order of `KEYS`.
            pub fn entries(&self) -> Vec<(&'static str, Value)> {
                vec![ $( (stringify!($field), self.$field.write(unit!($($unit)?))) ),* ]
            }
        }
    };
}

spec_block! {
    /// `data { }`: where the training text comes from and how it is split.
    pub struct Data = "data" {
        /// addition(digits, reverse, held_out) | text("file or folder") | jsonl("file or folder", key) | tokens("shard or folder")
        source: Source = Source::default(),
        /// fraction of a text corpus held out for validation
        val_split: f64 [Fraction] = 0.1,
        /// draw training windows at random (true) or in order (false)
        shuffle: bool = true,
        /// where GPT-2's end-of-text token goes between a text source's documents: between | before_each (llm.c's scripts)
        separator: Separator = Separator::Between,
    }
}

spec_block! {
    /// `model gpt { }`: the shape of the network.
    pub struct Model = "model" {
        /// bytes | words(size) | gpt2
        vocab: Vocab = Vocab::default(),
        /// tokens per sequence (T)
        context: u64 [Tokens] = 128,
        /// channels (C)
        width: u64 = 128,
        /// transformer blocks (L)
        layers: u64 = 4,
        /// attention heads (NH); width must be a multiple of heads
        heads: u64 = 4,
        /// MLP hidden width as a multiple of width
        mlp: f64 [Ratio] = 4.0,
        /// dense | window(w) | strided(stride, window) | primes(window) | lattice(coords, basis, radius, window)
        attention: Attention = Attention::default(),
        /// LayerNorm epsilon
        ln_eps: f64 = 1e-5,
        /// output head shares the token embedding
        tied_head: bool = true,
        /// standard deviation of the normal initialisation
        init_std: f64 = 0.02,
        /// initial weights: "file.safetensors" (GPT-2 tensor names) | hf("org/name", revision) from the local Hugging Face cache, whose config.json fills the sizes left out | none
        weights: Option<Weights> = None,
    }
}

spec_block! {
    /// `train { }`: how long and how to optimise.
    pub struct Train = "train" {
        /// optimizer steps
        steps: u64 [Steps] = 2000,
        /// sequences per optimizer step (B)
        batch: u64 [Seqs] = 16,
        /// micro-batches per step (gradient accumulation); must divide batch
        accumulate: u64 = 1,
        /// adamw(lr, betas, eps, weight_decay)
        optimizer: Optimizer = Optimizer::default(),
        /// constant(warmup) | linear(warmup, min_lr) | cosine(warmup, min_lr); min_lr defaults to lr/10
        schedule: Schedule = Schedule::default(),
        /// clip gradients to this global L2 norm, or none
        clip_grad: Option<f64> = Some(1.0),
        /// fp32 | bf16: bf16 rounds the operands of every matrix product (linear layers forward and backward, tied head, attention's QKᵀ and P·V and their backward) to bf16 (nearest, ties to even) and sums in fp32; LayerNorm, softmax, GELU, the loss, AdamW and the weights stay fp32
        precision: Precision = Precision::Fp32,
        /// seed for initialisation, data order and dropout-free sampling
        seed: u64 = 1337,
        /// print a progress line every this many steps
        log_every: u64 [Steps] = 10,
    }
}

spec_block! {
    /// `eval { }`: how often and how much to evaluate.
    pub struct Eval = "eval" {
        /// evaluate every this many steps (and after the last)
        every: u64 [Steps] = 250,
        /// validation batches per evaluation (at most 10 000)
        batches: u64 = 8,
    }
}

spec_block! {
    /// `sample { }`: text generation defaults for `cllm sample`.
    pub struct Sample = "sample" {
        /// text to continue
        prompt: String = "\n".to_string(),
        /// tokens to generate
        tokens: u64 [Tokens] = 200,
        /// softmax temperature; 0 is greedy
        temperature: f64 = 1.0,
        /// keep only the k most likely tokens, or none
        top_k: Option<u64> = None,
        /// keep the smallest set of tokens whose probability reaches p (nucleus)
        top_p: f64 [Fraction] = 1.0,
        /// sampling seed
        seed: u64 = 1337,
    }
}

spec_block! {
    /// `checkpoint { }`: where and how often to save.
    pub struct Checkpoint = "checkpoint" {
        /// folder for checkpoints and metrics (relative to the spec); none is runs/NAME
        dir: Option<String> = None,
        /// save every this many steps (and at the end)
        every: u64 [Steps] = 500,
    }
}

spec_block! {
    /// `plan { }`: how to run, never what to compute; nothing here changes the numbers.
    pub struct Plan = "plan" {
        /// worker threads: auto (every core) or a number, at most 1024
        threads: Threads = Threads::Auto,
        /// equal split of each micro-batch (must divide it); defaults to its largest divisor ≤ 8
        shards: u64 = 8,
        /// refuse plans whose arenas need more than this
        memory_budget: u64 [Bytes] = 8 * 1024 * 1024 * 1024,
        /// native (micro-kernels at the CPU's full vector width) | jit (Cranelift)
        gemm: Gemm = Gemm::Native,
        /// over ranks, send each piece of the gradient while backward runs (false: after it)
        overlap: bool = true,
        /// pipeline stages: the layers cut into this many, one rank each (`mpiexec -n STAGES`); 1 is none
        stages: u64 = 1,
    }
}

/// A whole, validated spec with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The language version from the first line (`cllm 0.1`).
    pub version: String,
    pub data: Data,
    pub model: Model,
    pub train: Train,
    pub eval: Eval,
    pub sample: Sample,
    pub checkpoint: Checkpoint,
    pub plan: Plan,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: super::VERSION.to_string(),
            data: Data::default(),
            model: Model::default(),
            train: Train::default(),
            eval: Eval::default(),
            sample: Sample::default(),
            checkpoint: Checkpoint::default(),
            plan: Plan::default(),
        }
    }
}

/// The names of every block, in printing order.
pub const BLOCKS: &[&str] = &[
    "data",
    "model",
    "train",
    "eval",
    "sample",
    "checkpoint",
    "plan",
];

impl Spec {
    /// Sets `block.key`; `Ok(false)` when there is no such key in that block.
    pub fn set(&mut self, block: &str, key: &str, value: &Spanned<Value>) -> Result<bool, Problem> {
        match block {
            "data" => self.data.set(key, value),
            "model" => self.model.set(key, value),
            "train" => self.train.set(key, value),
            "eval" => self.eval.set(key, value),
            "sample" => self.sample.set(key, value),
            "checkpoint" => self.checkpoint.set(key, value),
            "plan" => self.plan.set(key, value),
            _ => Ok(false),
        }
    }

    /// The keys and their one-line docs of `block` (empty for an unknown block).
    pub fn keys(block: &str) -> (&'static [&'static str], &'static [&'static str]) {
        match block {
            "data" => (Data::KEYS, Data::DOCS),
            "model" => (Model::KEYS, Model::DOCS),
            "train" => (Train::KEYS, Train::DOCS),
            "eval" => (Eval::KEYS, Eval::DOCS),
            "sample" => (Sample::KEYS, Sample::DOCS),
            "checkpoint" => (Checkpoint::KEYS, Checkpoint::DOCS),
            "plan" => (Plan::KEYS, Plan::DOCS),
            _ => (&[], &[]),
        }
    }

    /// Every block's entries, in printing order.
    pub fn blocks(&self) -> Vec<(&'static str, Vec<(&'static str, Value)>)> {
        vec![
            ("data", self.data.entries()),
            ("model", self.model.entries()),
            ("train", self.train.entries()),
            ("eval", self.eval.entries()),
            ("sample", self.sample.entries()),
            ("checkpoint", self.checkpoint.entries()),
            ("plan", self.plan.entries()),
        ]
    }
}

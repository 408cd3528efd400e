//! The enumerated values of the `train` and `plan` blocks: optimizers, schedules,
//! thread counts and GEMM back ends.

use serde::{Deserialize, Serialize};

use super::ast::{Spanned, Value};
use super::convert::{Args, Field, Unit, unknown_variant, variant};
use super::error::Problem;

/// The optimizer and its hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// `adamw(lr, betas, eps, weight_decay)`: Adam with bias correction and decoupled
    /// weight decay (not applied to biases and LayerNorm parameters).
    #[serde(rename = "adamw")]
    AdamW {
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    },
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::AdamW {
            lr: 1e-3,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

impl Optimizer {
    /// The peak learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::AdamW { lr, .. } => *lr,
        }
    }
}

impl Field for Optimizer {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "an optimizer such as `adamw(lr = 1e-3)`")?;
        match name {
            "adamw" => {
                let args = Args::new(name, span, args, &["lr", "betas", "eps", "weight_decay"])?;
                let Optimizer::AdamW {
                    lr,
                    betas,
                    eps,
                    weight_decay,
                } = Optimizer::default();
                Ok(Optimizer::AdamW {
                    lr: args.get("lr", Unit::None, lr)?,
                    betas: args.get("betas", Unit::None, betas)?,
                    eps: args.get("eps", Unit::None, eps)?,
                    weight_decay: args.get("weight_decay", Unit::None, weight_decay)?,
                })
            }
            _ => Err(unknown_variant(name, span, "optimizer", &["adamw"])),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        match self {
            Optimizer::AdamW {
                lr,
                betas,
                eps,
                weight_decay,
            } => Value::call(
                "adamw",
                vec![
                    (Some("lr"), Value::number(*lr)),
                    (Some("betas"), betas.write(Unit::None)),
                    (Some("eps"), Value::number(*eps)),
                    (Some("weight_decay"), Value::number(*weight_decay)),
                ],
            ),
        }
    }
}

/// The learning-rate schedule: a linear warm-up from 0 to the peak, then a decay.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `constant(warmup = 0 steps)`
    Constant { warmup: u64 },
    /// `linear(warmup = 100 steps, min_lr = 1e-4)`: straight down to `min_lr`.
    Linear { warmup: u64, min_lr: Option<f64> },
    /// `cosine(warmup = 100 steps, min_lr = 1e-4)`: half a cosine down to `min_lr`.
    /// `min_lr` defaults to a tenth of the optimizer's `lr`.
    Cosine { warmup: u64, min_lr: Option<f64> },
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Cosine {
            warmup: 100,
            min_lr: None,
        }
    }
}

impl Schedule {
    /// Steps of the linear warm-up to the peak learning rate.
    pub fn warmup(&self) -> u64 {
        match *self {
            Schedule::Constant { warmup }
            | Schedule::Linear { warmup, .. }
            | Schedule::Cosine { warmup, .. } => warmup,
        }
    }

    /// Fills the derived default `min_lr = lr / 10`.
    pub fn resolve(self, lr: f64) -> Schedule {
        match self {
            Schedule::Linear { warmup, min_lr } => Schedule::Linear {
                warmup,
                min_lr: Some(min_lr.unwrap_or(lr / 10.0)),
            },
            Schedule::Cosine { warmup, min_lr } => Schedule::Cosine {
                warmup,
                min_lr: Some(min_lr.unwrap_or(lr / 10.0)),
            },
            constant => constant,
        }
    }
}

impl Field for Schedule {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "a schedule such as `cosine(warmup = 100 steps)`")?;
        match name {
            "constant" => {
                let args = Args::new(name, span, args, &["warmup"])?;
                Ok(Schedule::Constant {
                    warmup: args.get("warmup", Unit::Steps, 0)?,
                })
            }
            "linear" | "cosine" => {
                let args = Args::new(name, span, args, &["warmup", "min_lr"])?;
                let warmup = args.get("warmup", Unit::Steps, 100)?;
                let min_lr = args.get_opt("min_lr", Unit::None)?;
                Ok(if name == "linear" {
                    Schedule::Linear { warmup, min_lr }
                } else {
                    Schedule::Cosine { warmup, min_lr }
                })
            }
            _ => Err(unknown_variant(
                name,
                span,
                "schedule",
                &["constant", "linear", "cosine"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        let warmup = |w: u64| (Some("warmup"), Unit::Steps.write(w as f64));
        let (name, w, min_lr) = match *self {
            Schedule::Constant { warmup: w } => ("constant", w, None),
            Schedule::Linear { warmup: w, min_lr } => ("linear", w, min_lr),
            Schedule::Cosine { warmup: w, min_lr } => ("cosine", w, min_lr),
        };
        let mut args = vec![warmup(w)];
        args.extend(min_lr.map(|m| (Some("min_lr"), Value::number(m))));
        Value::call(name, args)
    }
}

/// How many worker threads: `auto` (every core) or a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threads {
    #[default]
    Auto,
    Count(u64),
}

impl Field for Threads {
    fn read(value: &Spanned<Value>, unit: Unit) -> Result<Self, Problem> {
        match &value.node {
            Value::Ident(word) if word == "auto" => Ok(Threads::Auto),
            Value::Number { .. } => u64::read(value, unit).map(Threads::Count),
            _ => Err(Problem::new(
                value.span,
                format!(
                    "expected `auto` or a number of threads, found {}",
                    value.node.kind()
                ),
                "not a thread count",
            )
            .with_help("write `threads = auto` or a number such as `threads = 2`")),
        }
    }

    fn write(&self, unit: Unit) -> Value {
        match self {
            Threads::Auto => Value::Ident("auto".into()),
            Threads::Count(n) => n.write(unit),
        }
    }
}

/// Who multiplies matrices: native micro-kernels at the CPU's full vector width
/// (AVX-512 or AVX2, chosen at run time), or Cranelift's 128-bit code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gemm {
    #[default]
    Native,
    Jit,
}

impl Field for Gemm {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        let (name, span, args) = variant(value, "`native` or `jit`")?;
        Args::new(name, span, args, &[])?;
        match name {
            "native" => Ok(Gemm::Native),
            "jit" => Ok(Gemm::Jit),
            _ => Err(unknown_variant(
                name,
                span,
                "GEMM back end",
                &["native", "jit"],
            )),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        Value::Ident(match self {
            Gemm::Native => "native".into(),
            Gemm::Jit => "jit".into(),
        })
    }
}

impl Field for cllm_kernels::bf16::Precision {
    fn read(value: &Spanned<Value>, _unit: Unit) -> Result<Self, Problem> {
        use cllm_kernels::bf16::Precision;
        let (name, span, args) = variant(value, "`fp32` or `bf16`")?;
        Args::new(name, span, args, &[])?;
        match name {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(unknown_variant(name, span, "precision", &["fp32", "bf16"])),
        }
    }

    fn write(&self, _unit: Unit) -> Value {
        Value::Ident(self.name().into())
    }
}

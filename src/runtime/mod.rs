//! Stage 6: the training loop: data, the machine's parallel step (JIT or reference
//! interpreter, on every core, the same bits on any thread count), the optimizer,
//! evaluation, checkpoints and sampling.

pub mod bench;
pub mod decoder;
mod eval;
mod optimizer;
mod report;
pub mod sampler;
mod saving;
mod session;
mod trainer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::checkpoint::CheckpointError;
use crate::data::DataError;
use crate::plan::PassOptions;

pub use eval::{Evaluation, evaluate_checkpoint};
pub use optimizer::learning_rate;
pub use report::Averages;
pub use trainer::{RunSummary, train};

/// How to run, beyond what the spec says.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Folder for the checkpoint and metrics.jsonl.
    pub run_dir: PathBuf,
    /// Continue from the checkpoint in this folder (or file).
    pub resume: Option<PathBuf>,
    /// A fresh run into a folder that holds a run deletes that run's files first
    /// (otherwise it is refused).
    pub overwrite: bool,
    /// Resume even when the data differs from what the checkpoint trained on (the
    /// resumption is then not exact).
    pub allow_data_change: bool,
    /// Save a checkpoint and stop once this many steps are done (as Ctrl-C would).
    pub stop_at: Option<u64>,
    /// No stdout lines and no progress bar (metrics.jsonl is still written).
    pub quiet: bool,
    /// Set from outside (Ctrl-C) to save and stop after the current step.
    pub interrupt: Arc<AtomicBool>,
    /// The resolved spec text, stored in checkpoints.
    pub spec_text: String,
    /// Folder that relative paths in the spec are resolved against.
    pub base_dir: PathBuf,
    /// Which planner passes run (all by default; tests switch them off).
    pub passes: PassOptions,
    /// Fill every arena tensor with NaN when its lifetime ends (a liveness check).
    pub poison: bool,
    /// Who runs the kernels.
    pub backend: Backend,
    /// The other processes of a run split over ranks (MPI), if any: each step's
    /// shards are split among them and the results are the same bits (`machine/ranks.rs`).
    pub ranks: Option<Arc<dyn crate::machine::Exchange>>,
}

/// Who runs the plan's kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (plain loops, f64 accumulation).
    Interp,
    /// Cranelift-compiled kernels and native GEMM.
    Jit,
}

impl RunError {
    /// `Some(prints)` when every rank of a run split over ranks stops with this error
    /// at the same point (so none need abort the job), `prints` telling whether `rank`
    /// is the one to print it; `None` for an error of this rank alone (a write that
    /// failed on rank 0). Besides the errors the set-up exchange agreed on, the numbers
    /// are the same bits on every rank: a non-finite loss or state, or a divergence, is
    /// met by all ranks at the same step.
    pub fn on_every_rank(&self, rank: usize) -> Option<bool> {
        match self {
            RunError::OnEveryRank(_) => Some(true),
            RunError::SaidByAnotherRank(_) => Some(false),
            RunError::NonFinite { .. }
            | RunError::NonFiniteState { .. }
            | RunError::Diverged { .. } => Some(rank == 0),
            _ => None,
        }
    }
}

impl RunOptions {
    /// Options for a run in `run_dir` of a spec whose relative paths start at `base_dir`.
    pub fn new(run_dir: impl Into<PathBuf>, base_dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            run_dir: run_dir.into(),
            resume: None,
            overwrite: false,
            allow_data_change: false,
            stop_at: None,
            quiet: false,
            interrupt: Arc::new(AtomicBool::new(false)),
            spec_text: String::new(),
            base_dir: base_dir.into(),
            passes: PassOptions::default(),
            poison: false,
            backend: Backend::Jit,
            ranks: None,
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RunError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    RunFolder(#[from] crate::run_folder::RunFolderError),
    #[error("the OS could not start the plan's {0} threads: {1}")]
    #[diagnostic(
        code(cllm::threads),
        help("lower `plan.threads` (or write `threads = auto` for one per core)")
    )]
    Threads(usize, String),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ranks(#[from] crate::machine::RankError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stages(#[from] crate::machine::StageError),
    #[error("rank {rank} runs another spec, plan or cllm binary than rank 0")]
    #[diagnostic(
        code(cllm::ranks),
        help(
            "start every rank with the same binary, spec and --set overrides (one `mpiexec` command line)"
        )
    )]
    RankMismatch { rank: usize },
    #[error("rank {rank} could not start the run; its message says why")]
    #[diagnostic(code(cllm::ranks))]
    OtherRank { rank: usize },
    /// An error every rank of a run split over ranks reached at the same point (after
    /// an exchange that told every rank), so every rank stops without aborting the
    /// others; this rank prints it.
    #[error(transparent)]
    #[diagnostic(transparent)]
    OnEveryRank(Box<RunError>),
    /// The same, printed by another rank (each distinct error is printed once).
    #[error(transparent)]
    #[diagnostic(transparent)]
    SaidByAnotherRank(Box<RunError>),
    #[error("the JIT could not compile this plan: {0}")]
    #[diagnostic(
        code(cllm::jit),
        help("run with `--backend interp` to use the reference interpreter")
    )]
    Jit(#[from] cllm_kernels::jit::JitError),
    #[error("the loss is {loss} at step {step}: training diverged")]
    #[diagnostic(
        code(cllm::diverged),
        help(
            "lower `train.optimizer = adamw(lr = ...)`, add warm-up, or set `train.clip_grad`; the last checkpoint before step {step} is kept"
        )
    )]
    NonFinite { step: u64, loss: f64 },
    #[error(
        "after step {step}, `{tensor}` holds non-finite values: training diverged, and no checkpoint of this state is written"
    )]
    #[diagnostic(
        code(cllm::diverged),
        help(
            "lower `train.optimizer = adamw(lr = ...)` or raise its `eps`, add warm-up, or set `train.clip_grad`; the last checkpoint written before step {step}, if any, is kept"
        )
    )]
    NonFiniteState { step: u64, tensor: String },
    #[error("training diverged at step {step}: {what}")]
    #[diagnostic(
        code(cllm::diverged),
        help(
            "lower `train.optimizer = adamw(lr = ...)`, add warm-up, or set `train.clip_grad`; the last checkpoint before step {step} is kept"
        )
    )]
    Diverged { step: u64, what: String },
    #[error("cannot write to the run folder `{path}`")]
    #[diagnostic(code(cllm::io))]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data changed since `{path}` was written: it trained on {was}, the spec now reads {now}"
    )]
    #[diagnostic(
        code(cllm::resume),
        help(
            "a resumed run continues exactly only on the same data: put the corpus back, or resume on \
             the new data anyway with `--allow-data-change` (the run is then no longer a continuation)"
        )
    )]
    DataChanged {
        path: PathBuf,
        was: String,
        now: String,
    },
    #[error("the run in `{path}` is complete: step {step} of its {steps} steps")]
    #[diagnostic(
        code(cllm::resume),
        help(
            "under a constant schedule, `--steps N` with N > {steps} trains further; \
             otherwise the schedule was planned for {steps} steps: start a new run"
        )
    )]
    NothingToResume {
        path: PathBuf,
        step: u64,
        steps: u64,
    },
}

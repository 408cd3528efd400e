//! Why a spec cannot be planned: each refusal with the sizes it names and a fix.

use super::human_bytes;
use crate::lattice::LatticeError;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error(
        "the plan needs {} ({} of parameters, gradients and AdamW state + {} worker arena(s) of {}), over {}",
        human_bytes(*needed), human_bytes(*fixed), workers, human_bytes(*arena), limit_words(*budget, *by_machine)
    )]
    #[diagnostic(
        code(cllm::plan::budget),
        help("raise `plan.memory_budget` to at least {}, or lower `train.batch` (or raise `train.accumulate`), `model.context` or `plan.threads`", human_bytes(*needed))
    )]
    OverBudget {
        needed: u64,
        fixed: u64,
        arena: u64,
        workers: u64,
        budget: u64,
        /// The machine's memory is the limit (it is below `plan.memory_budget`).
        by_machine: bool,
    },
    #[error(
        "a model of {layers} layers of width {width} over a context of {context} tokens needs at least {} (parameters, their gradients and AdamW's state, a step's batch buffers and the planner's own tables), over {}",
        human_bytes(*needed), limit_words(*limit, *by_machine)
    )]
    #[diagnostic(
        code(cllm::plan::budget),
        help(
            "lower `model.layers`, `model.width`, `model.context` or `train.batch`, or raise `plan.memory_budget` (up to this machine's memory)"
        )
    )]
    ModelOverBudget {
        layers: u64,
        width: u64,
        context: u64,
        needed: u64,
        limit: u64,
        /// The machine's memory is the limit (it is below `plan.memory_budget`).
        by_machine: bool,
    },
    #[error("the attention pattern cannot be built: {0}")]
    #[diagnostic(
        code(cllm::plan::pattern),
        help(
            "check `model.attention`: a lattice basis needs two independent rows of small integers"
        )
    )]
    Pattern(#[from] LatticeError),
    #[error("plan.shards = {shards} does not divide the micro-batch of {micro_batch} sequences")]
    #[diagnostic(
        code(cllm::plan::shards),
        help("choose a divisor of batch / accumulate, e.g. `shards = {suggestion}`")
    )]
    Shards {
        shards: usize,
        micro_batch: usize,
        suggestion: usize,
    },
    #[error("plan.stages = {stages}: this model has {layers} layer(s) to cut into stages")]
    #[diagnostic(
        code(cllm::plan::stages),
        help("choose 1 to {layers} stages (1: no pipeline)")
    )]
    Stages { stages: usize, layers: usize },
}

/// The limit an admission refusal names: the budget, or the machine's memory.
fn limit_words(limit: u64, by_machine: bool) -> String {
    match by_machine {
        true => format!("this machine's {} of memory", human_bytes(limit)),
        false => format!("the memory budget of {}", human_bytes(limit)),
    }
}

//! The optimizer side of a step, lowered to the kernel IR like the plan's kernels: per
//! parameter chunk, one addition of the gradient tree (`sum += addend`, or a group's
//! subtree in one pass; each also
//! returns the chunk's Σ sum², so the clipping norm costs no extra pass), Σ g² alone
//! (for a root no addition made last), and AdamW, each a [`Step`] whose slots are
//! slices of the fixed state. Which buffers an addition adds is the gradient schedule's
//! business (`grads.rs`); the machine points the `Sum` and `Addend` slots at them when
//! it runs the step. Both back ends run these same steps: codegen compiles one kernel
//! per distinct shape, the reference machine hands them to `run_step`.

use serde::Serialize;

use super::ParamChunk;
use super::grads::GROUP;
use super::ir::Step;

/// A buffer of the fixed state (all flat, in parameter order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum State {
    Params,
    /// The gradient buffer that receives an addition; in AdamW, the step's gradient.
    Sum,
    /// The i-th gradient buffer added to it.
    Addend(usize),
    /// AdamW's first moment.
    M,
    /// AdamW's second moment.
    V,
}

/// Floats `offset..offset + len` of one buffer of the fixed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StateSlice {
    pub state: State,
    pub offset: usize,
    pub len: usize,
}

/// The optimizer's steps on one parameter chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkSteps {
    /// `ShardGradSum` of two: `Sum += Addend(0)`, returning Σ Sum².
    pub pair: Step<StateSlice>,
    /// `ShardGradSum` of [`GROUP`]: `Sum` = the fixed tree over `Sum` and `Addend(0..)`,
    /// returning Σ Sum².
    pub group: Step<StateSlice>,
    /// `ShardGradSum` of one: Σ Sum².
    pub squares: Step<StateSlice>,
    /// `AdamW` on the chunk, reading the summed gradient (`Sum`).
    pub adamw: Step<StateSlice>,
}

/// Reads the parameter chunks; writes the optimizer's steps, one set per chunk.
pub fn lower_optimizer(chunks: &[ParamChunk]) -> Vec<ChunkSteps> {
    chunks
        .iter()
        .map(|chunk| {
            let at = |state| StateSlice {
                state,
                offset: chunk.offset,
                len: chunk.len,
            };
            ChunkSteps {
                pair: Step::ShardGradSum {
                    len: chunk.len,
                    grads: vec![at(State::Sum), at(State::Addend(0))],
                },
                group: Step::ShardGradSum {
                    len: chunk.len,
                    grads: [State::Sum]
                        .into_iter()
                        .chain((0..GROUP - 1).map(State::Addend))
                        .map(at)
                        .collect(),
                },
                squares: Step::ShardGradSum {
                    len: chunk.len,
                    grads: vec![at(State::Sum)],
                },
                adamw: Step::AdamW {
                    segments: vec![(0, chunk.len, chunk.decay)],
                    params: at(State::Params),
                    grads: at(State::Sum),
                    m: at(State::M),
                    v: at(State::V),
                },
            }
        })
        .collect()
}

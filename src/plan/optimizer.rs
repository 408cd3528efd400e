//! The optimizer side of a step, lowered to the kernel IR like the plan's kernels: per
//! parameter chunk, the fixed-tree sum of the shards' gradients (which also returns the
//! chunk's Σ g²) and AdamW, each a [`Step`] whose slots are slices of the fixed state.
//! Both back ends run these same steps: codegen compiles one kernel per distinct shape,
//! the reference machine hands them to `run_step`.

use serde::Serialize;

use super::ParamChunk;
use super::ir::Step;

/// A buffer of the fixed state (all flat, in parameter order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum State {
    Params,
    /// The gradient buffer of one shard (shard 0's holds the sum).
    Grads {
        shard: usize,
    },
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

/// The optimizer's two steps on one parameter chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkSteps {
    /// `ShardGradSum` over every shard's slice of the chunk.
    pub grad_sum: Step<StateSlice>,
    /// `AdamW` on the chunk, reading the summed gradient (shard 0's).
    pub adamw: Step<StateSlice>,
}

/// Reads the parameter chunks and the shard count; writes the optimizer's steps, one
/// pair per chunk.
pub fn lower_optimizer(chunks: &[ParamChunk], shards: usize) -> Vec<ChunkSteps> {
    chunks
        .iter()
        .map(|chunk| {
            let at = |state| StateSlice {
                state,
                offset: chunk.offset,
                len: chunk.len,
            };
            ChunkSteps {
                grad_sum: Step::ShardGradSum {
                    len: chunk.len,
                    grads: (0..shards)
                        .map(|shard| at(State::Grads { shard }))
                        .collect(),
                },
                adamw: Step::AdamW {
                    segments: vec![(0, chunk.len, chunk.decay)],
                    params: at(State::Params),
                    grads: at(State::Grads { shard: 0 }),
                    m: at(State::M),
                    v: at(State::V),
                },
            }
        })
        .collect()
}

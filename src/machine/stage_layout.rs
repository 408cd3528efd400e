//! Making a machine one stage of a pipeline (`plan.stages`): its place among the ranks
//! (stage × replica, `Exchange::split`), what it holds — refused by name before it is
//! allocated when over the budget — its own arenas, and its compact parameters and
//! gradient buffers. The step itself is `pipeline.rs`; keeping the stages' state whole
//! among them, `stage_state.rs`.

use std::sync::Arc;

use cllm_kernels::Real;

use super::pipeline::Stages;
use super::ranks::Exchange;
use super::{Machine, Region};
use crate::graph::Role;
use crate::plan::owners::Owners;
use crate::plan::pipeline::StagePlan;

/// Why a machine cannot run as a pipeline stage on these ranks.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StageError {
    #[error(
        "{ranks} rank(s) cannot run plan.stages = {stages}: the ranks are stages × replicas, and the replicas must split the plan's {shards} shards into equal power-of-two blocks"
    )]
    #[diagnostic(
        code(cllm::stages),
        help("run on {counts} ranks (`mpiexec -n N`): {stages} stages × 1, 2, … replicas")
    )]
    Count {
        ranks: usize,
        stages: usize,
        shards: usize,
        /// The rank counts that would do, e.g. "2, 4 or 8".
        counts: String,
    },
    #[error(
        "stage {stage} needs {needs} (its parameters, moments and gradient buffers, what a checkpoint gathers on it, and {arenas} arena(s) of {arena} for its passes in flight), over plan.memory_budget = {budget}"
    )]
    #[diagnostic(
        code(cllm::stages),
        help(
            "raise plan.memory_budget, cut into more stages, or lower the arena (fewer sequences per shard: more plan.shards); the first stage also gathers the whole model's parameters and moments to write a checkpoint"
        )
    )]
    OverBudget {
        stage: usize,
        needs: String,
        arenas: usize,
        arena: String,
        budget: String,
    },
    #[error(
        "plan.stages = {stages}, but this process runs alone: the whole model needs {needs}, over plan.memory_budget = {budget} (a budget a stage)"
    )]
    #[diagnostic(
        code(cllm::stages),
        help(
            "run the stages on {stages} ranks (`mpiexec -n {stages}` with an `mpi` build), or raise plan.memory_budget"
        )
    )]
    Alone {
        stages: usize,
        needs: String,
        budget: String,
    },
    #[error("plan.stages = {stages}: this model has fewer layers to cut")]
    #[diagnostic(code(cllm::stages), help("choose at most one stage per layer"))]
    Layers { stages: usize },
}

/// How a stage packs the parameters its kernels touch (and their gradients, in every
/// buffer): the packed length, and per parameter chunk how far it moved from its place
/// in the whole model (`None`: not held; the tree's additions skip it). Where each
/// tensor now lives is in the machine's places (the bf16 panels' too).
pub(super) struct Packed {
    pub len: usize,
    pub shifts: Vec<Option<isize>>,
}

impl<T: Real> Machine<T> {
    /// Makes this process one stage of a `stages`-stage pipeline over the ranks of
    /// `world`: R = stages × Q ranks, rank r is stage r / Q of replica r % Q. Each
    /// replica's pipeline runs its block of the shards; the Q ranks of a stage are
    /// data-parallel ranks among themselves (`ranks.rs`, exchanged after the step).
    /// `accumulate`: micro-batches a step (with the block, how many passes a step has
    /// to keep in flight). Call before `attach_jit`.
    pub fn set_stages(
        &mut self,
        world: Arc<dyn Exchange>,
        stages: usize,
        accumulate: usize,
    ) -> Result<(), StageError> {
        assert!(self.program.is_none(), "set_stages goes before attach_jit");
        let (ranks, shards) = (world.ranks(), self.plan.shards);
        let replicas = ranks / stages.max(1);
        let fits = super::rank_counts(shards);
        if stages == 0 || !ranks.is_multiple_of(stages) || !fits.contains(&replicas) {
            let counts: Vec<usize> = fits.iter().map(|q| q * stages).collect();
            let counts = super::ranks::or_list(&counts, stages);
            return Err(StageError::Count {
                ranks,
                stages,
                shards,
                counts,
            });
        }
        let plan = StagePlan::new(&self.plan, stages).ok_or(StageError::Layers { stages })?;
        let (stage, replica) = (world.rank() / replicas, world.rank() % replicas);
        let (exchange, peers) = match replicas {
            1 => (world, None),
            // Every rank splits twice, in this order: its pipeline, then its stage.
            _ => (
                world.split(replica, stage),
                Some(world.split(stage, replica)),
            ),
        };
        let block = shards / replicas;
        let own = replica * block..(replica + 1) * block;
        // One worker runs every shard, each pass of those in flight in its own arena.
        let schedule = crate::plan::grads::schedule(shards, own.clone(), 1);
        // Each stage updates only the chunks it finishes: alone, it keeps their moments;
        // with replicas, the stage's data-parallel owners split them (`ranks.rs`).
        let chunks = &self.plan.param_chunks.clone();
        let params = self.chunk_params();
        let stage_of = |c: usize| plan.param_stage[params[c]];
        let owners = super::stage_state::OwnChunks::new(chunks, stages, stage_of);
        let finals = crate::plan::overlap::final_kernels(&self.plan);
        let dealt = Owners::of_some(chunks, &finals, replicas, |c| stage_of(c) == stage);
        // With replicas: their share of the moments and the exchange's two buffers.
        let replica_floats = (replicas > 1)
            .then(|| 2 * dealt.len(replica, chunks) + 2 * replicas * dealt.piece(chunks));
        // What this stage will hold, refused before it is allocated: the parameters its
        // kernels touch and gradient buffers of only those; the moments of its chunks
        // (or the replicas' share); its own arena (only the tensors its kernels touch
        // and its messages carry) for each pass in flight.
        let held = plan.held(&self.plan, stage, own.clone(), accumulate, replica_floats);
        // At most P − s passes in flight (fewer when a step has fewer passes).
        let slots = held.arenas;
        if held.total() > self.plan.memory_budget {
            let human = crate::plan::human_bytes;
            return Err(StageError::OverBudget {
                stage,
                needs: human(held.total()),
                arenas: held.arenas,
                arena: human(held.arena_bytes),
                budget: human(self.plan.memory_budget),
            });
        }
        let touched_by: Vec<Vec<bool>> = (0..stages)
            .map(|s| plan.touched_params(&self.plan, s))
            .collect();
        let touched = touched_by[stage].clone();
        let compact_len = held.compact_floats;
        let (arena_slots, arena_floats) = plan.arena(&self.plan, stage);
        self.schedule = schedule;
        (self.grads, self.grad_ptrs) = super::grad_buffers(self.schedule.buffers, compact_len);
        for (place, slot) in self.places.iter_mut().zip(&arena_slots) {
            if place.region == Region::Arena {
                (place.offset, place.len) = slot.map_or((0, 0), |s| (s.offset, s.len));
            }
        }
        let packed = self.pack(&touched, compact_len);
        // The parameters and their bf16 panels are packed as the gradients are.
        self.params = super::buffers::zeroed(compact_len);
        let graph = &self.plan.graph;
        let (panels, offsets) = super::panel_layout(graph, |i| touched[i]);
        self.panels = panels;
        for (id, t) in graph.tensors.iter().enumerate() {
            if let Role::Panels(i) = t.role {
                let len = if touched[i] { t.len() } else { 0 };
                (self.places[id].offset, self.places[id].len) = (offsets[id], len);
            }
        }
        // The parameters another stage touches too: sent on by their updater.
        let mut shares = Vec::new();
        for (i, &owner) in plan.param_stage.iter().enumerate() {
            let readers: Vec<usize> = (0..stages)
                .filter(|&s| s != owner && touched_by[s][i])
                .collect();
            if touched[i] && !readers.is_empty() {
                let place = self.places[graph.params[i].tensor.0];
                shares.push(super::stage_state::Share {
                    local: place.offset..place.offset + place.len,
                    owner,
                    readers,
                });
            }
        }
        let moments = match peers {
            Some(peers) => {
                // The stage's replicas: data-parallel owners of the chunks it finishes.
                let held: Vec<Option<isize>> = (packed.shifts.iter().enumerate())
                    .map(|(c, shift)| shift.filter(|_| stage_of(c) == stage))
                    .collect();
                let ranks =
                    super::ranks::Ranks::of_stage(peers, shards, chunks, &finals, Some(&held))
                        .expect("the replicas split the shards");
                let floats = ranks.own_len();
                self.ranks = Some(ranks);
                floats
            }
            None => (owners.chunks[stage].iter()).map(|&c| chunks[c].len).sum(),
        };
        (self.m, self.v) = (
            super::buffers::zeroed(moments),
            super::buffers::zeroed(moments),
        );
        self.packed = Some(packed);
        let with_arena = |_| super::Worker::with_arena(&self.plan, arena_floats);
        self.workers = (0..slots).map(with_arena).collect();
        let mut stage_of = Stages::new(exchange, plan, stage, replica);
        stage_of.shares = shares;
        stage_of.own = Some(owners);
        self.stages = Some(stage_of);
        Ok(())
    }

    /// The parameter each chunk is part of (chunks never straddle two).
    fn chunk_params(&self) -> Vec<usize> {
        let params = self.graph().params.len();
        (self.plan.param_chunks.iter())
            .map(|chunk| {
                (0..params)
                    .find(|&i| self.param_range(i).contains(&chunk.offset))
                    .expect("every chunk is in a parameter")
            })
            .collect()
    }

    /// Packs the `touched` parameters and their gradients in parameter order (their
    /// places in `self.places`); returns the packing.
    fn pack(&mut self, touched: &[bool], len: usize) -> Packed {
        let mut at = vec![None; touched.len()];
        let mut next = 0;
        for (i, &t) in touched.iter().enumerate().filter(|&(_, &t)| t) {
            let _ = t;
            at[i] = Some(next);
            next += self.param_range(i).len();
        }
        for (place, tensor) in self.places.iter_mut().zip(&self.plan.graph.tensors) {
            if let Role::Param(i) | Role::ParamGrad(i) = tensor.role {
                (place.offset, place.len) = at[i].map_or((0, 0), |a| (a, place.len));
            }
        }
        // Chunks never straddle two parameters: each moves with its own.
        let shifts = (self.chunk_params().into_iter())
            .map(|i| at[i].map(|a| a as isize - self.param_offsets[i] as isize))
            .collect();
        Packed { len, shifts }
    }
}

//! Pipeline stages at run time (`plan { stages = P }`): which stage runs each kernel,
//! what crosses between stages in each pass, and which stage finishes each
//! parameter's gradient — derived once from the plan, the same on every rank.
//!
//! The cut is [`super::stages`]'s (blocks cut into P contiguous stages minimising the
//! slowest, the embeddings with the first, the head with the last), priced at fixed
//! nominal rates so every rank cuts alike. A kernel belongs to the unit of what it
//! writes (the latest unit when a fused kernel writes two: a `residual_layernorm`
//! ending block l and starting block l + 1 is l + 1's), kept monotone — forward
//! kernels' stages never decrease, backward's never increase — so each stage runs one
//! contiguous run of the forward kernels and one of the backward (recompute included):
//! a pass is the segments F₀ F₁ … F_{P−1} B_{P−1} … B₀ in the single process's order.
//!
//! What crosses is found by replaying one pass's kernels: a kernel touching a tensor
//! (reading it, or writing what another stage wrote before — an accumulation) whose
//! last writer is another stage needs that writer's value, sent at the end of the
//! writer's segment and received before the reader's. Gradients of parameters written
//! by two stages (the tied `wte`: the head's product on the last stage, the
//! embeddings' scatter on the first) travel the same way, and within a shard's later
//! micro-batches the value a stage left in the previous pass travels to the next
//! writer. Every stage then runs exactly the single process's kernels on exactly its
//! values: the same bits.

use super::stages::{Unit, cut, unit_costs, unit_of};
use super::{Phase, Plan, Slot};
use crate::graph::{Role, TensorId};

/// Nominal rates pricing the cut: fixed, so every rank makes the same cut.
const CUT_FLOP_RATE: f64 = 100e9;
const CUT_BYTES_PER_S: f64 = 20e9;

/// Half of a pass: a stage's forward segment or its backward (with recompute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Forward = 0,
    Backward = 1,
}

impl Half {
    pub fn of(phase: Phase) -> Half {
        match phase {
            Phase::Forward => Half::Forward,
            Phase::Recompute | Phase::Backward => Half::Backward,
        }
    }
}

/// Values one stage sends another in a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: usize,
    pub to: usize,
    /// Sent when the sender ends this half (of the previous pass when `previous`).
    pub sent: Half,
    /// Received before the receiver starts this half.
    pub received: Half,
    /// Sent at the end of the shard's previous micro-batch (a gradient carried on).
    pub previous: bool,
    /// Arena tensors and parameter gradients, in order.
    pub tensors: Vec<TensorId>,
    pub floats: usize,
}

/// What a stage holds as built ([`StagePlan::held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Parameters, moments, gradient buffers and (bf16) weight panels.
    pub state_bytes: u64,
    /// What a checkpoint takes on top, while it is written: on the first stage (which
    /// writes the file) one tensor received from another stage at a time; with
    /// replicas, each stage's moments gathered among them.
    pub checkpoint_bytes: u64,
    /// Floats of each (packed) gradient buffer and of the parameters.
    pub compact_floats: usize,
    /// One arena, and how many are in flight.
    pub arena_bytes: u64,
    pub arenas: usize,
}

impl Held {
    pub fn total(&self) -> u64 {
        self.state_bytes + self.checkpoint_bytes + self.arenas as u64 * self.arena_bytes
    }
}

/// The stages' division of one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePlan {
    pub stages: usize,
    /// Blocks of each stage.
    pub blocks: Vec<std::ops::Range<usize>>,
    /// The stage of each kernel.
    pub kernel_stage: Vec<usize>,
    /// What crosses in a shard's first micro-batch (gradients start at zero everywhere).
    pub first: Vec<Message>,
    /// What crosses in its later micro-batches (gradients carried from the last).
    pub later: Vec<Message>,
    /// The stage that finishes each parameter's gradient (its last writer).
    pub param_stage: Vec<usize>,
}

impl StagePlan {
    /// The division of `plan` into `stages`; `None` when the model has fewer blocks.
    /// The cut balances time (the slowest stage, [`cut`]); when a stage of it would
    /// hold more than `plan.memory_budget` ([`StagePlan::held`], one process's shards),
    /// blocks move off the over-budget stage, one at a time, to a neighbour that stays
    /// within the budget (the lighter first), until every stage fits. When no such move
    /// is left, the fastest cut stands (and the run refuses its stage by name).
    pub fn new(plan: &Plan, stages: usize) -> Option<StagePlan> {
        let (embeddings, blocks, head) = unit_costs(plan, CUT_FLOP_RATE, CUT_BYTES_PER_S);
        let mut costs: Vec<f64> = blocks.iter().map(|b| b.seconds).collect();
        let last = costs.len().checked_sub(1)?;
        costs[0] += embeddings.seconds;
        costs[last] += head.seconds;
        let fastest = StagePlan::of_ranges(plan, cut(&costs, stages)?);
        let holds = |division: &StagePlan| -> Vec<u64> {
            (0..stages)
                .map(|s| division.held(plan, s, 0..plan.shards, 1, None).total())
                .collect()
        };
        let mut division = fastest.clone();
        // A bounded walk: each accepted move leaves its receiver within the budget.
        for _ in 0..costs.len() * stages {
            let held = holds(&division);
            let Some(over) = (0..stages).find(|&s| held[s] > plan.memory_budget) else {
                return Some(division);
            };
            let ranges = &division.blocks;
            if ranges[over].len() < 2 {
                break;
            }
            let mut neighbours: Vec<usize> = [over.checked_sub(1), Some(over + 1)]
                .into_iter()
                .flatten()
                .filter(|&s| s < stages)
                .collect();
            neighbours.sort_by_key(|&s| held[s]);
            let moved = neighbours.into_iter().find_map(|to| {
                let mut ranges = ranges.clone();
                if to < over {
                    ranges[over].start += 1;
                    ranges[to].end += 1;
                } else {
                    ranges[over].end -= 1;
                    ranges[to].start -= 1;
                }
                let trial = StagePlan::of_ranges(plan, ranges);
                (holds(&trial)[to] <= plan.memory_budget).then_some(trial)
            });
            match moved {
                Some(trial) => division = trial,
                None => break,
            }
        }
        Some(fastest)
    }

    /// The division of `plan` into the stages of the blocks `ranges`.
    fn of_ranges(plan: &Plan, ranges: Vec<std::ops::Range<usize>>) -> StagePlan {
        let stages = ranges.len();
        let graph = &plan.graph;
        let layers = graph.dims.layers;
        let stage_of_unit = |unit: usize| match unit {
            0 => 0,
            u if u > layers => stages - 1,
            u => ranges
                .iter()
                .position(|r| r.contains(&(u - 1)))
                .expect("cut"),
        };
        let unit_index = |unit: Unit| match unit {
            Unit::Embeddings => 0,
            Unit::Block(l) => 1 + l.min(layers - 1),
            Unit::Head => layers + 1,
        };
        // Each kernel's unit: the latest it writes, kept monotone within each half.
        let (mut forward, mut backward) = (0, usize::MAX);
        let kernel_stage = (plan.kernels.iter())
            .map(|kernel| {
                let mut unit = 0;
                for step in &kernel.steps {
                    step.visit(|slot, id| {
                        if slot.writes {
                            unit = unit.max(unit_index(unit_of(&graph.tensor(*id).name)));
                        }
                    });
                }
                let unit = match Half::of(kernel.phase) {
                    Half::Forward => {
                        forward = forward.max(unit);
                        forward
                    }
                    Half::Backward => {
                        backward = backward.min(unit);
                        backward
                    }
                };
                stage_of_unit(unit)
            })
            .collect::<Vec<_>>();
        let mut plan_of = StagePlan {
            stages,
            blocks: ranges,
            kernel_stage,
            first: Vec::new(),
            later: Vec::new(),
            param_stage: vec![0; graph.params.len()],
        };
        // A pass from zeroed gradients, then one carrying the last pass's writers on.
        let mut writers = vec![None; graph.tensors.len()];
        plan_of.first = plan_of.replay(plan, &mut writers, false);
        for (id, tensor) in graph.tensors.iter().enumerate() {
            match tensor.role {
                Role::ParamGrad(i) => plan_of.param_stage[i] = writers[id].map_or(0, |(s, _)| s),
                _ => writers[id] = None,
            }
        }
        plan_of.later = plan_of.replay(plan, &mut writers, true);
        plan_of
    }

    /// One pass's kernels in order from the last writers `writers` (stage, half; the
    /// parameter gradients' carried in when `carried`): the messages it needs.
    fn replay(
        &self,
        plan: &Plan,
        writers: &mut [Option<(usize, Half)>],
        carried: bool,
    ) -> Vec<Message> {
        let graph = &plan.graph;
        let carried_in: Vec<bool> = writers.iter().map(|w| carried && w.is_some()).collect();
        let mut fresh = vec![false; writers.len()]; // written in this pass
        // The stages holding each tensor's latest value: its writer and who received it.
        let mut holders: Vec<Vec<usize>> = writers
            .iter()
            .map(|w| w.iter().map(|w| w.0).collect())
            .collect();
        let mut messages: Vec<Message> = Vec::new();
        for (k, kernel) in plan.kernels.iter().enumerate() {
            let (stage, half) = (self.kernel_stage[k], Half::of(kernel.phase));
            let mut touched = Vec::new();
            for step in &kernel.steps {
                step.visit(|slot, id| touched.push((*id, slot.writes)));
            }
            for &(id, writes) in &touched {
                let moves = matches!(
                    graph.tensor(id).role,
                    Role::Activation | Role::Saved | Role::Grad | Role::ParamGrad(_)
                );
                let held = holders[id.0].contains(&stage);
                if let Some((from, sent)) = writers[id.0].filter(|_| moves && !held) {
                    let previous = carried_in[id.0] && !fresh[id.0];
                    let key = (from, stage, sent, half, previous);
                    let at = messages
                        .iter()
                        .position(|m| (m.from, m.to, m.sent, m.received, m.previous) == key);
                    let message = match at {
                        Some(at) => &mut messages[at],
                        None => {
                            messages.push(Message {
                                from,
                                to: stage,
                                sent,
                                received: half,
                                previous,
                                tensors: Vec::new(),
                                floats: 0,
                            });
                            messages.last_mut().expect("pushed")
                        }
                    };
                    if !message.tensors.contains(&id) {
                        message.tensors.push(id);
                        message.floats += graph.tensor(id).len();
                    }
                    // The value is here now: a later reader on this stage needs no more.
                    holders[id.0].push(stage);
                }
                if writes {
                    writers[id.0] = Some((stage, half));
                    holders[id.0] = vec![stage];
                    fresh[id.0] = true;
                }
            }
        }
        messages
    }

    /// How many passes stage `s` holds at once under 1F1B over `passes`.
    pub fn in_flight(&self, s: usize, passes: usize) -> usize {
        (self.stages - s).min(passes).max(1)
    }

    /// What stage `stage` holds as built, running the shards `block` with `accumulate`
    /// micro-batches a step: the parameters
    /// its kernels touch (and in bf16 their panels), gradient buffers holding only
    /// those, the AdamW moments of the parameters it finishes (with replicas,
    /// `replica_floats`: the replica's share of them and its exchange buffers), and its
    /// arenas in flight.
    pub fn held(
        &self,
        plan: &Plan,
        stage: usize,
        block: std::ops::Range<usize>,
        accumulate: usize,
        replica_floats: Option<usize>,
    ) -> Held {
        let graph = &plan.graph;
        let own: usize = (0..graph.params.len())
            .filter(|&i| self.param_stage[i] == stage)
            .map(|i| graph.tensor(graph.params[i].tensor).len())
            .sum();
        let moment_floats = replica_floats.unwrap_or(2 * own);
        let touched = self.touched_params(plan, stage);
        let compact: usize = (0..touched.len())
            .filter(|&i| touched[i])
            .map(|i| plan.graph.tensor(plan.graph.params[i].tensor).len())
            .sum();
        let buffers = super::grads::schedule(plan.shards, block.clone(), 1).buffers;
        let (_, arena) = self.arena(plan, stage);
        // At most P − s passes in flight, and never more than a step has.
        let arenas = (self.stages - stage).min(block.len() * accumulate);
        // In bf16 mode, the panels of the weights it holds.
        let panels: usize = (graph.tensors.iter())
            .filter_map(|t| match t.role {
                Role::Panels(i) if touched[i] => Some(t.len()),
                _ => None,
            })
            .sum();
        let floats = compact + moment_floats + buffers * compact + panels;
        // A checkpoint: the first stage receives the others' tensors one at a time (the
        // largest parameter's worth); with replicas, the stage's moments gathered (one
        // packed temporary, both moments packed).
        let largest = (graph.params.iter())
            .map(|p| graph.tensor(p.tensor).len())
            .max()
            .unwrap_or(0);
        let first = if stage == 0 { largest } else { 0 };
        let gathered = replica_floats.map_or(0, |_| compact + 2 * own);
        Held {
            state_bytes: 4 * floats as u64,
            checkpoint_bytes: 4 * (first + gathered) as u64,
            compact_floats: compact,
            arena_bytes: 4 * arena as u64,
            arenas,
        }
    }

    /// The parameters stage `stage`'s kernels read or whose gradients they write
    /// (every one a message of its carries is among them): the only ones its
    /// parameters and shard buffers need (a weight's bf16 panels are read as the weight).
    pub fn touched_params(&self, plan: &Plan, stage: usize) -> Vec<bool> {
        let graph = &plan.graph;
        let mut touched = vec![false; graph.params.len()];
        for (k, kernel) in plan.kernels.iter().enumerate() {
            if self.kernel_stage[k] != stage {
                continue;
            }
            for step in &kernel.steps {
                step.visit(|_, id| {
                    if let Role::Param(i) | Role::ParamGrad(i) | Role::Panels(i) =
                        graph.tensor(*id).role
                    {
                        touched[i] = true;
                    }
                });
            }
        }
        touched
    }

    /// Stage `stage`'s own arena: a slot for each arena tensor it touches, live from
    /// its first to its last touch among the stage's kernels (a received tensor from
    /// the start of the half it arrives in, a sent one to the end of the half it leaves
    /// after), placed as the whole plan's are (`placement.rs`); and its peak in floats.
    /// Tensors the stage never touches get no slot.
    pub fn arena(&self, plan: &Plan, stage: usize) -> (Vec<Option<Slot>>, usize) {
        let graph = &plan.graph;
        let mut lives: Vec<Option<(usize, usize)>> = vec![None; graph.tensors.len()];
        let mut touch = |id: TensorId, k: usize| {
            if plan.in_arena(id) {
                let life = lives[id.0].get_or_insert((k, k));
                *life = (life.0.min(k), life.1.max(k));
            }
        };
        // Each half's run of this stage's kernels.
        let mut runs: [Option<(usize, usize)>; 2] = [None, None];
        for (k, kernel) in plan.kernels.iter().enumerate() {
            if self.kernel_stage[k] != stage {
                continue;
            }
            let run = runs[Half::of(kernel.phase) as usize].get_or_insert((k, k));
            run.1 = k;
            for step in &kernel.steps {
                step.visit(|_, id| touch(*id, k));
            }
        }
        for m in self.first.iter().chain(&self.later) {
            let at = match (m.to == stage, m.from == stage) {
                (true, _) => runs[m.received as usize].map(|r| r.0),
                (_, true) => runs[m.sent as usize].map(|r| r.1),
                _ => None,
            };
            for &id in m.tensors.iter().filter(|_| at.is_some()) {
                touch(id, at.expect("filtered"));
            }
        }
        let live: Vec<usize> = (0..lives.len()).filter(|&i| lives[i].is_some()).collect();
        let placed = super::placement::place(live.iter().map(|&i| {
            let (first, last) = lives[i].expect("filtered");
            (graph.tensors[i].len(), first, last)
        }));
        let mut slots = vec![None; graph.tensors.len()];
        for (&i, &slot) in live.iter().zip(&placed) {
            slots[i] = Some(slot);
        }
        (slots, super::placement::peak(&placed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(layers: usize) -> Plan {
        let text = format!(
            "cllm 0.1\ndata {{ source = addition(digits = 2, held_out = 50) }}\n\
             model gpt {{ context = 12 tokens  width = 32  layers = {layers}  heads = 2 }}\n\
             train {{ steps = 2  batch = 16 seqs }}\nplan {{ threads = 1  shards = 4 }}\n"
        );
        let spec = crate::spec::parse(&text, "t", std::path::Path::new("."), &[]).unwrap();
        crate::plan::plan(&spec).unwrap()
    }

    #[test]
    fn each_stage_runs_one_run_of_each_half() {
        let plan = plan_of(4);
        for stages in 1..=4 {
            let cut = StagePlan::new(&plan, stages).unwrap();
            let mut runs = Vec::new();
            for (k, kernel) in plan.kernels.iter().enumerate() {
                let key = (Half::of(kernel.phase), cut.kernel_stage[k]);
                if runs.last() != Some(&key) {
                    assert!(!runs.contains(&key), "{stages} stages: {key:?} twice");
                    runs.push(key);
                }
            }
            assert_eq!(runs.len(), 2 * stages, "{stages} stages: {runs:?}");
        }
        assert!(StagePlan::new(&plan, 5).is_none());
    }

    #[test]
    fn boundaries_carry_activations_forward_and_gradients_back() {
        let plan = plan_of(2);
        let cut = StagePlan::new(&plan, 2).unwrap();
        let forward: Vec<_> = cut.first.iter().filter(|m| m.from == 0).collect();
        let back: Vec<_> = cut.first.iter().filter(|m| m.from == 1).collect();
        assert!(forward.iter().all(|m| m.to == 1));
        assert!(back.iter().all(|m| m.to == 0 && m.sent == Half::Backward));
        assert!(!forward.is_empty() && !back.is_empty());
        // The tied wte's gradient: begun by the head (last stage), finished by the
        // embeddings (first): the first stage owns it.
        let wte = plan
            .graph
            .params
            .iter()
            .position(|p| plan.graph.tensor(p.tensor).name == "wte");
        assert_eq!(cut.param_stage[wte.unwrap()], 0);
        let graph = &plan.graph;
        let carried = |m: &Message| {
            (m.tensors.iter()).any(|t| matches!(graph.tensor(*t).role, Role::ParamGrad(_)))
        };
        assert!(
            back.iter().any(|m| carried(m)),
            "wte's gradient travels back"
        );
        // Later micro-batches carry it on to the head from the first stage.
        assert!(
            cut.later
                .iter()
                .any(|m| m.previous && m.from == 0 && m.to == 1)
        );
        assert!(cut.first.iter().all(|m| !m.previous));
    }
}

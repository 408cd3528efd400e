//! A step as one stage of a pipeline (`plan { stages = P }`; the division is
//! `plan/pipeline.rs`'s), with the single process's bits.
//!
//! ```text
//!  stage s of P, passes 0..m (the step's shards × micro-batches, in the single
//!  process's order), each pass in an arena of its own among min(P − s, m):
//!    F(0) … F(w − 1)              w = min(P − 1 − s, m) warm-up forwards
//!    F(i + w) B(i)   for each i   one forward, one backward (1F1B, PipeDream-flush)
//!  F(i): receive what the earlier stages' forwards sent for pass i, run this stage's
//!        forward kernels, send on what later stages need
//!  B(i): zero the shard's gradient buffer (its first micro-batch), receive, run this
//!        stage's recompute and backward kernels, send back; the shard's tree
//!        additions once its last micro-batch is done
//!  then: the tree above (none on one worker); each stage's Σ g² of the chunks it
//!        finishes to every stage (the clipping norm), AdamW on those chunks (their
//!        moments are the stage's alone), each parameter two stages touch (the tied
//!        `wte`) from the one that updated it to the other (`stage_state.rs`)
//! ```
//!
//! Sends never wait (each pass's values are copied to its own outbox and posted); a
//! receive waits for its sender. Every message comes from earlier in the single
//! process's order of (pass, segment), so no stage waits on itself: the schedule
//! cannot deadlock. Each stage runs the single process's kernels on the single
//! process's values, its gradient buffers follow the single process's tree, and the
//! losses are added in its order: the parameters after a step are the same bits.
//!
//! With Q replicas (R = P × Q ranks) each replica's pipeline runs its block of the
//! shards, and a stage's replicas sum their blocks of the chunks it finishes and update
//! them as data-parallel ranks do (`ranks.rs`, over the stage's chunks alone). Setting a
//! stage up (its place, memory, arenas, and its parameters and gradient buffers packed
//! to what its kernels touch) is `stage_layout.rs`; keeping the stages' state whole
//! among them (the shared `wte`, checkpoints) is `stage_state.rs`.

use std::sync::Arc;

use rayon::prelude::*;

use cllm_kernels::Real;

use super::chunks::ChunkStep;
use super::ranks::{Exchange, bytes_of, bytes_of_mut};
use super::stage_state::{OwnChunks, Share};
use super::worker::Pass;
use super::{Machine, Region};
use crate::data::Batch;
use crate::plan::Phase;
use crate::plan::grads::ROOT;
use crate::plan::pipeline::{Half, StagePlan};

/// Messages of one pass kind are tagged by index below this.
const TAGS_PER_PASS: usize = 16;

/// This process's stage of the pipeline.
pub(super) struct Stages<T: Real> {
    pub exchange: Arc<dyn Exchange>,
    pub plan: StagePlan,
    pub stage: usize,
    /// Which replica's pipeline this is (0 without replicas).
    pub replica: usize,
    /// Per pass, the values this stage sends in it, each message at its offset:
    /// untouched until the step's sends have left.
    outbox: Vec<Vec<T>>,
    out_floats: usize,
    /// Offsets in an outbox of the `first` and the `later` messages.
    out_at: [Vec<usize>; 2],
    inbox: Vec<T>,
    /// Loss sums of the passes, in (micro-batch, shard) order.
    losses: Vec<f64>,
    /// Each stage's Σ loss, as bytes (all-gathered).
    stage_losses: Vec<u8>,
    /// Whether this step runs forward only (evaluation).
    forward_only: bool,
    /// Without replicas: the chunks each stage updates (`None`: every stage updates
    /// every chunk from the gathered gradient).
    pub own: Option<OwnChunks>,
    /// Without replicas, the parameters this stage shares with another.
    pub shares: Vec<Share>,
    /// With replicas, the stage's moments gathered among them for a checkpoint
    /// (`stage_state.rs`).
    pub checkpoint_moments: Option<(Vec<T>, Vec<T>)>,
    /// Whether the state was gathered to the first stage since the last update
    /// (`stage_state.rs`).
    pub state_gathered: bool,
    /// Seconds spent waiting for other stages' messages and in the step's gathers.
    pub seconds: f64,
    pub sent_bytes: u64,
}

impl<T: Real> Machine<T> {
    /// Forward and (with `backward`) backward of every pass of the step as this stage;
    /// returns Σ loss. Forward only (evaluation), only what later forwards read is sent.
    pub(super) fn run_stage(&mut self, batches: &[Batch], loss_scale: f64, backward: bool) -> f64 {
        self.refresh_panels();
        let micro = batches.len();
        let own = self.schedule.workers[0].shards.clone();
        let (first, block) = (own.start, own.len());
        let passes = block * micro;
        let shard_len = self.plan.graph.dims.rows();
        let threads = self.plan.threads;
        let pool = Arc::clone(&self.pool);
        let mut st = self.stages.take().expect("a pipeline stage");
        if st.outbox.len() < passes {
            let floats = st.out_floats;
            st.outbox.resize_with(passes, || vec![T::default(); floats]); // the first step
        }
        st.losses.clear();
        st.losses.resize(passes, 0.0); // allocates on the first step only
        let forward_only = !backward;
        st.forward_only = forward_only;
        let (shared, workers) = self.split();
        let slots = workers.len();
        let part = &shared.schedule.workers[0];
        let stage = st.stage;
        // Lent to the passes for the step (a move, not a copy: nothing is allocated).
        let kernel_stage = std::mem::take(&mut st.plan.kernel_stage);
        let warm = slots.saturating_sub(1).min(passes);
        pool.install(|| {
            cllm_kernels::gemm::sgemm::set_gemm_threads(threads);
            // Pass i is the block's shard i / micro, micro-batch i % micro.
            let forward = |st: &mut Stages<T>, workers: &mut [super::Worker<T>], i: usize| {
                let (s, a) = (i / micro, i % micro);
                let worker = &mut workers[i % slots];
                let rows = (first + s) * shard_len..(first + s + 1) * shard_len;
                worker
                    .tokens
                    .copy_from_slice(&batches[a].tokens[rows.clone()]);
                worker.targets.copy_from_slice(&batches[a].targets[rows]);
                let buffer = part.buffer[s];
                st.receive(&shared, worker, buffer, i, a, Half::Forward);
                let mine = |k, p| p == Phase::Forward && kernel_stage[k] == stage;
                let loss = worker.run(
                    &shared,
                    buffer,
                    s,
                    mine,
                    Pass::adding(loss_scale),
                    &mut |_| {},
                );
                st.losses[a * block + s] = loss;
                st.send(&shared, worker, buffer, i, a, micro, Half::Forward);
            };
            let backward = |st: &mut Stages<T>, workers: &mut [super::Worker<T>], i: usize| {
                let (s, a) = (i / micro, i % micro);
                let worker = &mut workers[i % slots];
                let buffer = part.buffer[s];
                if a == 0 {
                    // SAFETY: the schedule gives this buffer to this shard alone.
                    unsafe { shared.grads[buffer].slice(shared.grads_len) }.fill(T::default());
                }
                st.receive(&shared, worker, buffer, i, a, Half::Backward);
                let mine = |k, p| p != Phase::Forward && kernel_stage[k] == stage;
                worker.run(
                    &shared,
                    buffer,
                    s,
                    mine,
                    Pass::adding(loss_scale),
                    &mut |_| {},
                );
                st.send(&shared, worker, buffer, i, a, micro, Half::Backward);
                if a + 1 == micro {
                    // SAFETY: the additions read and write finished shards' buffers.
                    unsafe {
                        super::grad_sum::add_all(shared.chunks, &part.after[s], shared.grads)
                    };
                }
            };
            if forward_only {
                for i in 0..passes {
                    forward(&mut st, workers, i);
                }
                return;
            }
            for i in 0..warm {
                forward(&mut st, workers, i);
            }
            for i in 0..passes {
                if i + warm < passes {
                    forward(&mut st, workers, i + warm);
                }
                backward(&mut st, workers, i);
            }
        });
        st.plan.kernel_stage = kernel_stage;
        st.exchange.finish_sends();
        // Σ loss in (micro-batch, shard) order on the stage with the loss (over the
        // replicas' blocks too); 0 elsewhere.
        let mine = match &mut self.ranks {
            Some(ranks) => {
                ranks.losses_out.clear();
                ranks.losses_out.extend_from_slice(&st.losses);
                ranks.total_loss(micro)
            }
            None => st.losses.iter().fold(0.0, |sum, x| sum + x),
        };
        let started = std::time::Instant::now();
        let mut all = std::mem::take(&mut st.stage_losses);
        st.exchange.all_gather(&mine.to_le_bytes(), &mut all);
        st.seconds += started.elapsed().as_secs_f64();
        let total = (all.chunks(8))
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .fold(0.0, |sum, x| sum + x);
        st.stage_losses = all;
        self.stages = Some(st);
        total
    }

    /// The step's gradient whole on every stage: the tree above the worker (if any),
    /// each stage's finished gradients gathered to all, and each chunk's Σ g².
    pub(super) fn sum_stage_grads(&mut self) {
        let pool = Arc::clone(&self.pool);
        let chunks = super::chunks::Chunks::of(&self.plan, &self.program);
        let (last, grads) = (&self.schedule.last, &self.grad_ptrs);
        if !last.is_empty() {
            let shifts = self.packed.as_ref().map(|c| &c.shifts[..]);
            let chunks = super::chunks::Chunks { shifts, ..chunks };
            pool.install(|| {
                (0..self.chunk_squares.len()).into_par_iter().for_each(|i| {
                    // SAFETY: each task takes one chunk of the buffers; the passes are done.
                    unsafe { super::grad_sum::chunk_tree(chunks, i, last, grads) };
                })
            });
        }
        if self.ranks.is_some() {
            // The stage's replicas sum their blocks of the chunks it finishes: each owner
            // gets its chunks' totals, every replica their Σ g² (`grad_sum.rs`).
            self.sum_over_ranks();
        } else {
            // Alone, the stage holds its chunks' totals: their Σ g².
            let st = self.stages.as_ref().expect("a pipeline stage");
            let mine = &st.own.as_ref().expect("a stage's chunks").chunks[st.stage];
            let root = &self.grad_ptrs[ROOT];
            let shifts = &self.packed.as_ref().expect("a stage's packing").shifts;
            let squares = SyncF64(self.chunk_squares.as_mut_ptr());
            pool.install(|| {
                mine.par_iter().for_each(|&i| {
                    let squares = &squares;
                    // The chunk where this stage's packed gradients hold it.
                    let shift = shifts[i].expect("a stage writes the chunks it finishes");
                    let at = |slice: &crate::plan::optimizer::StateSlice| {
                        root.0.wrapping_add(slice.offset.wrapping_add_signed(shift))
                    };
                    // SAFETY: each task takes one chunk of buffer ROOT and its own slot.
                    unsafe { *squares.0.add(i) = chunks.run(ChunkStep::Squares, i, at) };
                })
            });
        }
        // Every stage's chunks' Σ g² to every stage: the clipping norm.
        let st = self.stages.as_mut().expect("a pipeline stage");
        st.gather_squares(&mut self.chunk_squares);
    }
}

/// A pointer to the chunks' Σ g², each task writing its own chunk's.
struct SyncF64(*mut f64);
// SAFETY: tasks write disjoint elements.
unsafe impl Sync for SyncF64 {}

impl<T: Real> Stages<T> {
    /// Stage `stage` of `plan` over `exchange` (replica `replica`'s pipeline), its
    /// buffers sized once.
    pub(super) fn new(
        exchange: Arc<dyn Exchange>,
        plan: StagePlan,
        stage: usize,
        replica: usize,
    ) -> Self {
        let stages = plan.stages;
        for list in [&plan.first, &plan.later] {
            assert!(
                list.len() <= TAGS_PER_PASS,
                "at most {TAGS_PER_PASS} messages"
            );
        }
        let mut out_at = [Vec::new(), Vec::new()];
        let mut out_floats = 0;
        for (kind, list) in [&plan.first, &plan.later].into_iter().enumerate() {
            for m in list {
                out_at[kind].push(out_floats);
                if m.from == stage {
                    out_floats += m.floats;
                }
            }
        }
        let inbox = [&plan.first, &plan.later].into_iter().flatten();
        let inbox = inbox.filter(|m| m.to == stage).map(|m| m.floats).max();
        Stages {
            exchange,
            plan,
            stage,
            replica,
            outbox: Vec::new(),
            out_floats,
            out_at,
            inbox: vec![T::default(); inbox.unwrap_or(0)],
            losses: Vec::new(),
            stage_losses: vec![0; 8 * stages],
            forward_only: false,
            own: None,
            shares: Vec::new(),
            state_gathered: false,
            checkpoint_moments: None,
            seconds: 0.0,
            sent_bytes: 0,
        }
    }

    fn tag(pass: usize, kind: usize, index: usize) -> usize {
        ((pass % 1000) * 2 + kind) * TAGS_PER_PASS + index
    }

    /// Receives, before `half` of pass `i`, every message for it into its places.
    fn receive(
        &mut self,
        shared: &super::worker::Shared<'_, T>,
        worker: &mut super::Worker<T>,
        buffer: usize,
        i: usize,
        a: usize,
        half: Half,
    ) {
        let (list, kind) = match a {
            0 => (&self.plan.first, 0),
            _ => (&self.plan.later, 1),
        };
        for (j, m) in list.iter().enumerate() {
            if m.to != self.stage || m.received != half {
                continue;
            }
            let inbox = &mut self.inbox[..m.floats];
            let started = std::time::Instant::now();
            (self.exchange).recv(m.from, Self::tag(i, kind, j), bytes_of_mut(inbox));
            self.seconds += started.elapsed().as_secs_f64();
            let mut at = 0;
            for id in &m.tensors {
                let to = place_of(shared, worker, buffer, *id);
                to.copy_from_slice(&inbox[at..at + to.len()]);
                at += to.len();
            }
        }
    }

    /// Sends, after `half` of pass `i`, every message it owes (and, after a backward,
    /// the gradients the shard's next micro-batch carries on).
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        shared: &super::worker::Shared<'_, T>,
        worker: &mut super::Worker<T>,
        buffer: usize,
        i: usize,
        a: usize,
        micro: usize,
        half: Half,
    ) {
        let kind = usize::from(a > 0); // 0: the shard's first micro-batch (`first`)
        let next = half == Half::Backward && a + 1 < micro;
        let lists = [(&self.plan.first, 0), (&self.plan.later, 1)];
        for (list, k) in lists {
            for (j, m) in list.iter().enumerate() {
                let wanted = !self.forward_only || m.received == Half::Forward;
                let now = k == kind && !m.previous && m.sent == half && wanted;
                let carried = k == 1 && next && m.previous;
                if m.from != self.stage || !(now || carried) {
                    continue;
                }
                let out = &mut self.outbox[i][self.out_at[k][j]..][..m.floats];
                let mut at = 0;
                for id in &m.tensors {
                    let from = place_of(shared, worker, buffer, *id);
                    out[at..at + from.len()].copy_from_slice(from);
                    at += from.len();
                }
                let pass = if carried { i + 1 } else { i };
                let bytes = bytes_of(out);
                // SAFETY: this pass's outbox is not written again before the step's
                // sends have finished (`run_stage`).
                unsafe {
                    (self.exchange).post_send(
                        m.to,
                        Self::tag(pass, k, j),
                        bytes.as_ptr(),
                        bytes.len(),
                    )
                };
                self.sent_bytes += bytes.len() as u64;
            }
        }
    }
}

/// Where tensor `id` of a pass lives: its arena, or its shard's gradient buffer.
fn place_of<'a, T: Real>(
    shared: &'a super::worker::Shared<'_, T>,
    worker: &'a mut super::Worker<T>,
    buffer: usize,
    id: crate::graph::TensorId,
) -> &'a mut [T] {
    let (place, len) = (shared.places[id.0], shared.grads_len);
    let range = place.offset..place.offset + place.len;
    match place.region {
        Region::Arena => &mut worker.arena[range],
        // SAFETY: the shard's buffer is this pass's alone while it runs.
        Region::Grads => unsafe { &mut shared.grads[buffer].slice(len)[range] },
        region => unreachable!("no {region:?} tensor crosses stages"),
    }
}

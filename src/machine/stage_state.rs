//! What a pipeline stage holds of the model's state, and how the stages keep it whole
//! among them. Each stage holds the parameters its kernels touch (packed by
//! `stage_layout.rs`) and the AdamW moments of the chunks it finishes (ZeRO-1 over the
//! stages; with replicas, split again among them). After a step each stage learns every
//! chunk's Σ g² (one small all-gather, for the clipping norm), updates its own chunks,
//! and sends each parameter another stage also touches — the tied `wte`: the
//! embeddings' and the head's — to that stage. A checkpoint is streamed tensor by tensor
//! from the stage that holds each to rank 0, which writes it; the whole state is
//! gathered to rank 0 only when asked for ([`Machine::gather_moments`]: decoding the
//! addition task).

use std::ops::Range;
use std::time::Instant;

use cllm_kernels::Real;

use super::Machine;
use super::pipeline::Stages;
use super::ranks::{bytes_of, bytes_of_mut};

/// Tag of the state's messages (the shared parameters after AdamW, a checkpoint's
/// gather): above the pipeline's pass tags, within MPI's least upper bound (32 767).
/// Each pair of stages sends them in one fixed order, so one tag serves them all.
const STATE_TAG: usize = 32_000;

/// Without replicas, each stage alone updates the chunks whose gradients it finishes
/// (ZeRO-1 over the stages): every stage's chunks, where each sits in its stage's
/// packed moments, and the buffers of their Σ g²'s gather.
pub(super) struct OwnChunks {
    pub chunks: Vec<Vec<usize>>,
    pub local: Vec<usize>,
    squares_out: Vec<f64>,
    squares_in: Vec<f64>,
}

impl OwnChunks {
    /// Chunk c belongs to the stage of `param_stage(c)`.
    pub(super) fn new(
        chunks: &[crate::plan::ParamChunk],
        stages: usize,
        stage_of: impl Fn(usize) -> usize,
    ) -> Self {
        let mut lists = vec![Vec::new(); stages];
        let mut local = vec![0; chunks.len()];
        let mut filled = vec![0; stages];
        for (c, chunk) in chunks.iter().enumerate() {
            let s = stage_of(c);
            lists[s].push(c);
            local[c] = filled[s];
            filled[s] += chunk.len;
        }
        let most = lists.iter().map(Vec::len).max().unwrap_or(0);
        OwnChunks {
            chunks: lists,
            local,
            squares_out: vec![0.0; most],
            squares_in: vec![0.0; most * stages],
        }
    }
}

/// A parameter more than one stage holds: where this stage holds it, the stage that
/// updates it (its gradient's finisher) and the other stages that read it.
pub(super) struct Share {
    pub local: Range<usize>,
    pub owner: usize,
    pub readers: Vec<usize>,
}

impl<T: Real> Stages<T> {
    /// Every stage's own chunks' Σ g² into `squares` (each stage's own are there
    /// beforehand): one small all-gather.
    pub(super) fn gather_squares(&mut self, squares: &mut [f64]) {
        let own = self.own.as_mut().expect("own chunks");
        let most = own.squares_out.len();
        for (k, &c) in own.chunks[self.stage].iter().enumerate() {
            own.squares_out[k] = squares[c];
        }
        let started = std::time::Instant::now();
        (self.exchange).all_gather(
            bytes_of(&own.squares_out),
            bytes_of_mut(&mut own.squares_in),
        );
        self.seconds += started.elapsed().as_secs_f64();
        for (s, list) in own.chunks.iter().enumerate() {
            for (k, &c) in list.iter().enumerate() {
                squares[c] = own.squares_in[s * most + k];
            }
        }
    }

    /// After AdamW: each shared parameter from the stage that updated it to the other
    /// stages that hold it (every send posted before any receive: no stage waits on
    /// one that waits on it).
    pub(super) fn share_params(&mut self, params: &mut [T]) {
        let started = Instant::now();
        for share in self.shares.iter().filter(|s| s.owner == self.stage) {
            let bytes = bytes_of(&params[share.local.clone()]);
            for &to in &share.readers {
                // SAFETY: these parameters are not written before `finish_sends` below.
                unsafe { (self.exchange).post_send(to, STATE_TAG, bytes.as_ptr(), bytes.len()) };
                self.sent_bytes += bytes.len() as u64;
            }
        }
        for share in self.shares.iter().filter(|s| s.owner != self.stage) {
            let to = bytes_of_mut(&mut params[share.local.clone()]);
            self.exchange.recv(share.owner, STATE_TAG, to);
        }
        self.exchange.finish_sends();
        self.seconds += started.elapsed().as_secs_f64();
    }
}

impl<T: Real> Machine<T> {
    /// Whether the model's state is split over pipeline stages and
    /// [`Machine::gather_moments`] gathers it to the first stage of the first replica
    /// (rank 0) alone.
    pub fn state_on_first_stage(&self) -> bool {
        self.stages.is_some()
    }

    /// Whether this process holds the whole model's state once
    /// [`Machine::gather_moments`] has run: every process but a pipeline stage other
    /// than rank 0.
    pub fn holds_whole_state(&self) -> bool {
        (self.stages.as_ref()).is_none_or(|s| s.stage == 0 && s.replica == 0)
    }

    /// Every stage's parameters and moments gathered whole to rank 0 (`whole_params`,
    /// `whole_moments`): with replicas, each stage's moments first
    /// among its replicas, then the first replica's pipeline to its first stage. Every
    /// rank calls it at the same point; only rank 0 holds the whole state afterwards.
    pub(super) fn gather_to_first_stage(&mut self) {
        let params = self.graph().params.len();
        // With replicas, the stage's moments packed as its chunks alone are packed.
        let stage_moments = self.stage_moments();
        let held: Vec<Range<usize>> = (0..params).map(|i| self.held_range(i)).collect();
        let whole: Vec<Range<usize>> = (0..params).map(|i| self.param_range(i)).collect();
        let floats = self.param_floats;
        let chunks = &self.plan.param_chunks;
        let st = self.stages.as_mut().expect("a pipeline stage");
        if st.replica != 0 {
            return; // the first replica's pipeline holds the same state
        }
        let (my_m, my_v) = match &stage_moments {
            Some((m, v)) => (&m[..], &v[..]),
            None => (&self.m[..], &self.v[..]),
        };
        let own = st.own.take().expect("a stage's chunks");
        let param_stage = st.plan.param_stage.clone();
        let param_stage = &param_stage;
        let stage_params = |s: usize| (0..params).filter(move |&i| param_stage[i] == s);
        let started = Instant::now();
        if st.stage != 0 {
            let mut sends = vec![bytes_of(my_m), bytes_of(my_v)];
            sends.extend(stage_params(st.stage).map(|i| bytes_of(&self.params[held[i].clone()])));
            for bytes in sends {
                // SAFETY: the moments and parameters are not written before
                // `finish_sends` below.
                unsafe { (st.exchange).post_send(0, STATE_TAG, bytes.as_ptr(), bytes.len()) };
                st.sent_bytes += bytes.len() as u64;
            }
            st.exchange.finish_sends();
            st.seconds += started.elapsed().as_secs_f64();
            st.own = Some(own);
            return;
        }
        let (mut m, mut v, mut p) = (
            vec![T::default(); floats],
            vec![T::default(); floats],
            vec![T::default(); floats],
        );
        let mut scratch = Vec::new();
        for s in 0..st.plan.stages {
            let list = &own.chunks[s];
            for (whole_moment, mine) in [(&mut m, my_m), (&mut v, my_v)] {
                let packed: &[T] = match s {
                    0 => mine,
                    _ => {
                        let len = list.iter().map(|&c| chunks[c].len).sum();
                        scratch.resize(len, T::default());
                        st.exchange.recv(s, STATE_TAG, bytes_of_mut(&mut scratch));
                        &scratch
                    }
                };
                for &c in list {
                    let chunk = chunks[c];
                    whole_moment[chunk.offset..chunk.offset + chunk.len]
                        .copy_from_slice(&packed[own.local[c]..][..chunk.len]);
                }
            }
            for i in stage_params(s) {
                let to = &mut p[whole[i].clone()];
                match s {
                    0 => to.copy_from_slice(&self.params[held[i].clone()]),
                    _ => st.exchange.recv(s, STATE_TAG, bytes_of_mut(to)),
                }
            }
        }
        st.seconds += started.elapsed().as_secs_f64();
        st.own = Some(own);
        self.whole_moments = Some((m, v));
        self.whole_params = Some(p);
    }

    /// With replicas: the stage's moments gathered among its replicas (each holds its
    /// owners' share), packed as its chunks are when it runs alone; `None` without.
    fn stage_moments(&mut self) -> Option<(Vec<T>, Vec<T>)> {
        let ranks = self.ranks.as_mut()?;
        let st = self.stages.as_ref().expect("a pipeline stage");
        let own = st.own.as_ref().expect("a stage's chunks");
        let list = &own.chunks[st.stage];
        let chunks = &self.plan.param_chunks;
        let floats = list.iter().map(|&c| chunks[c].len).sum();
        let mut packed = |mine: &[T]| {
            // Every owner's chunks where the stage holds them, then packed.
            let mut held = vec![T::default(); self.params.len()];
            ranks.gather_owned(&mut held, Some(mine));
            let mut out = vec![T::default(); floats];
            for &c in list {
                let from = ranks.chunk_floats[c].clone();
                out[own.local[c]..][..from.len()].copy_from_slice(&held[from]);
            }
            out
        };
        Some((packed(&self.m), packed(&self.v)))
    }
}

/// A checkpoint streamed from the stages to rank 0 (the runtime writes it with
/// `checkpoint::save_streamed`): the checkpoint's tensor k is parameter k for k < N,
/// then each parameter's two AdamW moments (m, v) in turn. Each tensor comes from the
/// stage that finishes its parameter's gradient (the first replica's), so rank 0 never
/// holds more than its own stage's state and one tensor in flight. Every rank calls
/// [`Machine::checkpoint_table`] at the same point; then rank 0 takes every tensor in
/// name order ([`Machine::checkpoint_values`] or [`Machine::checkpoint_recv`]) while the
/// first replica's other stages send theirs in that order ([`Machine::checkpoint_send`]).
impl Machine<f32> {
    /// The parameter and moment (0: the parameter, 1: m, 2: v) of tensor k.
    fn checkpoint_part(&self, k: usize) -> (usize, usize) {
        let n = self.graph().params.len();
        match k < n {
            true => (k, 0),
            false => ((k - n) / 2, 1 + (k - n) % 2),
        }
    }

    /// Every tensor's CRC-32 and whether it is finite, learned by every rank: with
    /// replicas each stage's moments are first gathered among them (kept until
    /// [`Machine::checkpoint_done`]); each stage computes its own tensors'; one small
    /// all-gather along each pipeline.
    pub fn checkpoint_table(&mut self) -> Vec<(u32, bool)> {
        let moments = self.stage_moments();
        let st = self.stages.as_mut().expect("a pipeline stage");
        st.checkpoint_moments = moments;
        let count = 3 * self.graph().params.len();
        let mut mine = vec![0u64; count];
        for (k, word) in mine.iter_mut().enumerate() {
            if let Some(values) = self.checkpoint_values(k) {
                let finite = values.iter().all(|x| x.is_finite());
                let crc = crate::checkpoint::crc_of(values);
                *word = 1 << 34 | u64::from(finite) << 32 | u64::from(crc);
            }
        }
        let st = self.stages.as_mut().expect("a pipeline stage");
        let mut all = vec![0u64; count * st.plan.stages];
        let started = Instant::now();
        (st.exchange).all_gather(bytes_of_u64(&mine), bytes_of_u64_mut(&mut all));
        st.seconds += started.elapsed().as_secs_f64();
        (0..count)
            .map(|k| {
                let word = (0..st.plan.stages)
                    .map(|s| all[s * count + k])
                    .find(|w| w >> 34 == 1)
                    .expect("a stage finishes every parameter");
                (word as u32, word >> 32 & 1 == 1)
            })
            .collect()
    }

    /// Tensor k's values, if this stage is the one that sends them.
    pub fn checkpoint_values(&self, k: usize) -> Option<&[f32]> {
        let (i, part) = self.checkpoint_part(k);
        let st = self.stages.as_ref().expect("a pipeline stage");
        if st.plan.param_stage[i] != st.stage {
            return None;
        }
        if part == 0 {
            return Some(&self.params[self.held_range(i)]);
        }
        // The moments packed as the stage's chunks are (with replicas, gathered).
        let own = st.own.as_ref().expect("a stage's chunks");
        let (m, v) = match &st.checkpoint_moments {
            Some((m, v)) => (&m[..], &v[..]),
            None => (&self.m[..], &self.v[..]),
        };
        let range = self.param_range(i);
        let first = (own.chunks[st.stage].iter())
            .find(|&&c| self.plan.param_chunks[c].offset == range.start)
            .expect("a parameter's chunks are its stage's");
        let at = own.local[*first];
        let packed = if part == 1 { m } else { v };
        Some(&packed[at..at + range.len()])
    }

    /// On rank 0: tensor k from the stage that holds it, into `buffer`.
    pub fn checkpoint_recv<'a>(&mut self, k: usize, buffer: &'a mut Vec<f32>) -> &'a [f32] {
        let (i, _) = self.checkpoint_part(k);
        buffer.resize(self.param_range(i).len(), 0.0);
        let st = self.stages.as_mut().expect("a pipeline stage");
        let started = Instant::now();
        let from = st.plan.param_stage[i];
        st.exchange
            .recv(from, STATE_TAG, bytes_of_mut(&mut buffer[..]));
        st.seconds += started.elapsed().as_secs_f64();
        buffer
    }

    /// On the first replica's other stages: this stage's tensors to rank 0, in the
    /// `order` rank 0 takes them (a rank of another replica sends nothing).
    pub fn checkpoint_send(&mut self, order: &[usize]) {
        let st = self.stages.as_ref().expect("a pipeline stage");
        if st.replica != 0 || st.stage == 0 {
            return;
        }
        let mut sent = 0;
        for &k in order {
            if let Some(values) = self.checkpoint_values(k) {
                let bytes = bytes_of(values);
                // SAFETY: nothing is written before `finish_sends` below.
                unsafe { (st.exchange).post_send(0, STATE_TAG, bytes.as_ptr(), bytes.len()) };
                sent += bytes.len() as u64;
            }
        }
        let st = self.stages.as_mut().expect("a pipeline stage");
        let started = Instant::now();
        st.exchange.finish_sends();
        st.seconds += started.elapsed().as_secs_f64();
        st.sent_bytes += sent;
    }

    /// Drops what [`Machine::checkpoint_table`] gathered.
    pub fn checkpoint_done(&mut self) {
        if let Some(st) = self.stages.as_mut() {
            st.checkpoint_moments = None;
        }
    }
}

fn bytes_of_u64(values: &[u64]) -> &[u8] {
    // SAFETY: u64 is plain data; the slice covers exactly the values' bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

fn bytes_of_u64_mut(values: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(values);
    // SAFETY: u64 is plain data: every byte pattern is a value.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), len) }
}

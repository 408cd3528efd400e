//! The model's state as the runtime reads and sets it — each parameter, its gradient
//! and its AdamW moments — wherever this process holds them: whole, split over ranks
//! (ZeRO-1 moments), or packed on a pipeline stage (only what its kernels touch).

use cllm_kernels::Real;

use super::Machine;
use crate::graph::Role;
use crate::plan::grads::ROOT;

impl<T: Real> Machine<T> {
    pub(super) fn param_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = self.param_offsets[i];
        start..start + self.graph().tensor(self.graph().params[i].tensor).len()
    }

    /// Where this process holds parameter `i` in `params` (a pipeline stage that does
    /// not touch it: nowhere, an empty range).
    pub(super) fn held_range(&self, i: usize) -> std::ops::Range<usize> {
        let place = self.places[self.graph().params[i].tensor.0];
        place.offset..place.offset + place.len
    }

    /// Whether this process holds parameter `i` (every process does, but a pipeline
    /// stage without replicas holds only the parameters its kernels touch).
    pub fn holds_param(&self, i: usize) -> bool {
        self.held_range(i).len() == self.param_range(i).len()
    }

    /// Parameter `i`'s values.
    ///
    /// # Panics
    /// On a pipeline stage that does not hold it ([`Machine::holds_param`]), unless the
    /// state was gathered to this (the first) stage by [`Machine::gather_moments`].
    pub fn param(&self, i: usize) -> &[T] {
        if self.holds_param(i) {
            return &self.params[self.held_range(i)];
        }
        let whole = (self.whole_params.as_ref()).expect("a stage holds this parameter");
        &whole[self.param_range(i)]
    }

    /// Parameter `i`'s values, to set.
    ///
    /// # Panics
    /// On a pipeline stage that does not hold it ([`Machine::holds_param`]).
    pub fn param_mut(&mut self, i: usize) -> &mut [T] {
        assert!(
            self.holds_param(i),
            "this stage does not hold parameter {i}"
        );
        self.panels_stale = true;
        self.state_changed();
        let range = self.held_range(i);
        &mut self.params[range]
    }

    /// Parameter `i`'s gradient: after a step, the sum over every shard; after the
    /// single-shard [`Machine::backward`], shard 0's. Over ranks, only the floats of
    /// this rank's own run are the sum: each owner alone finishes its run.
    pub fn grad(&self, i: usize) -> &[T] {
        // (A pipeline stage holds only its own parameters' gradients, packed.)
        let graph = self.graph();
        let tensor = (graph.tensors.iter())
            .position(|t| t.role == Role::ParamGrad(i))
            .expect("every parameter has a gradient");
        let place = self.places[tensor];
        &self.grads[ROOT][place.offset..place.offset + place.len]
    }

    /// Parameter `i`'s AdamW moments (m, v). Over ranks, each rank holds its own span
    /// only: ask after [`Machine::gather_moments`].
    ///
    /// # Panics
    /// Over ranks, when the moments were not gathered since the last AdamW step.
    pub fn moments(&self, i: usize) -> (&[T], &[T]) {
        let range = self.param_range(i);
        let split = self.ranks.is_some() || self.stages.as_ref().is_some_and(|s| s.own.is_some());
        let (m, v): (&[T], &[T]) = match (split, &self.whole_moments) {
            (false, _) => (&self.m, &self.v),
            (true, Some((m, v))) => (m, v),
            (true, None) => panic!("over ranks, gather_moments before reading the moments"),
        };
        (&m[range.clone()], &v[range])
    }

    /// Sets parameter `i`'s AdamW moments (over ranks, keeps the part in this rank's span).
    pub fn set_moments(&mut self, i: usize, m: &[T], v: &[T]) {
        let range = self.param_range(i);
        self.state_changed();
        if let Some(ranks) = &self.ranks {
            // Over ranks: this rank's chunks of the parameter, each to its place in the
            // piece (chunks never straddle two parameters).
            for &c in &ranks.owners.chunks[ranks.exchange.rank()] {
                let (start, len) = (ranks.chunk_starts[c], ranks.chunk_floats[c].len());
                if start >= range.start && start + len <= range.end {
                    let (from, at) = (start - range.start, ranks.owners.local[c]);
                    self.m[at..at + len].copy_from_slice(&m[from..from + len]);
                    self.v[at..at + len].copy_from_slice(&v[from..from + len]);
                }
            }
            return;
        }
        if let Some(own) = self
            .stages
            .as_ref()
            .and_then(|s| Some((s.stage, s.own.as_ref()?)))
        {
            // A stage without replicas: its own chunks of the parameter, packed.
            let (stage, own) = own;
            for &c in &own.chunks[stage] {
                let chunk = self.plan.param_chunks[c];
                if chunk.offset >= range.start && chunk.offset < range.end {
                    let (from, to) = (chunk.offset - range.start, own.local[c]);
                    self.m[to..to + chunk.len].copy_from_slice(&m[from..from + chunk.len]);
                    self.v[to..to + chunk.len].copy_from_slice(&v[from..from + chunk.len]);
                }
            }
            return;
        }
        self.m[range.clone()].copy_from_slice(m);
        self.v[range].copy_from_slice(v);
    }

    /// The parameters or moments changed: what was gathered of them is stale.
    pub(super) fn state_changed(&mut self) {
        (self.whole_moments, self.whole_params) = (None, None);
        if let Some(stage) = &mut self.stages {
            stage.state_gathered = false;
        }
    }
}

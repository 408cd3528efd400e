//! Binding a compiled [`Program`] to a machine's memory: every kernel's argument
//! table, per shard a worker runs, and the weight-panel kernels' tables, built once,
//! so a step on the JIT path allocates nothing.

use crate::codegen::Program;

use super::{Bound, Machine, Table};

impl Machine<f32> {
    /// Runs every kernel with `program` (compiled from this machine's plan) from now on.
    pub fn attach_jit(&mut self, program: Program) {
        assert_eq!(
            program.kernels.len(),
            self.plan.kernels.len(),
            "the program was compiled from another plan"
        );
        let params = self.params.as_mut_ptr();
        let (mask, panels) = (self.mask.as_mut_ptr(), self.panels.as_mut_ptr());
        // Worker w's j-th shard accumulates into the buffer the schedule gives it.
        let parts = self
            .schedule
            .workers
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        // A pipeline stage's workers are its passes in flight: each runs every shard.
        let stage = self.stages.is_some();
        let first = self.schedule.workers.first();
        let parts = parts
            .enumerate()
            .map(|(w, part)| if stage && w > 0 { first } else { part });
        for (worker, part) in self.workers.iter_mut().zip(parts) {
            let buffers = part.map_or(&[][..], |p| p.buffer.as_slice());
            worker.tables = (buffers.iter())
                .map(|&b| {
                    let grads = self.grads[b].as_mut_ptr();
                    let places = &self.places;
                    program
                        .kernels
                        .iter()
                        .map(|k| {
                            Table(
                                k.args
                                    .iter()
                                    .map(|&id| {
                                        let bases = [params, grads, mask, panels];
                                        worker.pointer(places[id.0], bases)
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                })
                .collect();
        }
        // The weight-panel kernels' tables: a weight (parameters) and its two panels; none
        // for a weight this process does not hold (a pipeline stage's others).
        let panel_tables = (self.plan.panels.iter())
            .map(|step| {
                let mut pointers = Vec::new();
                let mut held = true;
                step.visit(|_, id| {
                    let place = self.places[id.0];
                    held &= place.len > 0;
                    let base = match place.region {
                        super::Region::Params => params,
                        super::Region::Panels => panels,
                        region => unreachable!("a weight panel step reads no {region:?}"),
                    };
                    pointers.push(base.wrapping_add(place.offset).cast());
                });
                held.then_some(Table(pointers))
            })
            .collect();
        self.panels_stale = true; // made by this program's kernels before their first read
        self.program = Some(Bound {
            program,
            panel_tables,
        });
    }
}

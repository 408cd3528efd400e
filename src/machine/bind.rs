//! Binding a compiled [`Program`] to a machine's memory: every kernel's argument
//! table, per shard, and the shard-sum and AdamW tables per parameter chunk, built
//! once, so a step on the JIT path allocates nothing.

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
        let mask = self.mask.as_mut_ptr();
        let (own, workers) = (self.own_shards(), self.plan.workers);
        for (w, worker) in self.workers.iter_mut().enumerate() {
            worker.tables = (own.start + w..own.end)
                .step_by(workers)
                .map(|s| {
                    let grads = self.shard_grads[s].as_mut_ptr();
                    program
                        .kernels
                        .iter()
                        .map(|k| {
                            Table(
                                k.args
                                    .iter()
                                    .map(|&id| {
                                        worker.pointer(self.places[id.0], params, grads, mask)
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                })
                .collect();
        }
        let chunks = &self.plan.param_chunks;
        let shard_sum_tables = chunks
            .iter()
            .map(|c| {
                Table(
                    self.shard_grads
                        .iter_mut()
                        .map(|g| g[c.offset..].as_mut_ptr().cast())
                        .collect(),
                )
            })
            .collect();
        let adamw_tables = chunks
            .iter()
            .map(|c| {
                Table(
                    [
                        &mut self.params,
                        &mut self.shard_grads[0],
                        &mut self.m,
                        &mut self.v,
                    ]
                    .into_iter()
                    .map(|b| b[c.offset..].as_mut_ptr().cast())
                    .collect(),
                )
            })
            .collect();
        self.program = Some(Bound {
            program,
            shard_sum_tables,
            adamw_tables,
        });
    }
}

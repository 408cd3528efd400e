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
        if let Some(ranks) = &mut self.ranks {
            // Pass 1: this rank's shards, −0.0 for the others', the sum into shard 0's
            // buffer (or `partial` when shard 0 is another rank's). Pass 2: each rank's
            // sum at its block's first shard, −0.0 elsewhere, the total into shard 0's.
            let (len, block) = (self.params.len(), ranks.block);
            let zero = ranks.minus_zero.as_mut_ptr().cast::<u8>();
            let pass = |slot: &mut dyn FnMut(usize, usize) -> *mut u8| -> Vec<Table> {
                chunks
                    .iter()
                    .map(|c| Table((0..self.plan.shards).map(|s| slot(s, c.offset)).collect()))
                    .collect()
            };
            let grads: Vec<*mut f32> = self
                .shard_grads
                .iter_mut()
                .map(|g| g.as_mut_ptr())
                .collect();
            let (own, partial) = (ranks.own.clone(), ranks.partial.as_mut_ptr());
            // SAFETY (both passes): offsets stay inside each buffer (chunks cover P floats).
            let first = pass(&mut |s, at| match s {
                _ if own.contains(&s) => unsafe { grads[s].add(at).cast() },
                0 => unsafe { partial.add(at).cast() },
                _ => zero,
            });
            let sums = ranks.sums.as_mut_ptr();
            let second = pass(&mut |s, at| match s {
                0 => unsafe { grads[0].add(at).cast() },
                _ if s.is_multiple_of(block) => unsafe { sums.add((s / block) * len + at).cast() },
                _ => zero,
            });
            ranks.tables = Some((first, second));
        }
        self.program = Some(Bound {
            program,
            shard_sum_tables,
            adamw_tables,
        });
    }
}

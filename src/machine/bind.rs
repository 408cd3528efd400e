//! Binding a compiled [`Program`] to a machine's memory: every kernel's argument
//! table, per shard, and the tables of the plan's optimizer steps per parameter chunk
//! (the shard sum, and over ranks its two passes, and AdamW), built once, so a step on
//! the JIT path allocates nothing.

use crate::codegen::Program;
use crate::plan::ir::Step;
use crate::plan::optimizer::{State, StateSlice};

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
                                        let bases = [params, grads, mask, panels];
                                        worker.pointer(self.places[id.0], bases)
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                })
                .collect();
        }
        // The optimizer's tables: each chunk step's slots, in argument order, resolved
        // to pointers into the fixed state.
        let grads: Vec<*mut f32> = (self.shard_grads.iter_mut())
            .map(|g| g.as_mut_ptr())
            .collect();
        let [params, m, v] = [&mut self.params, &mut self.m, &mut self.v].map(|b| b.as_mut_ptr());
        let local = |slice: &StateSlice| {
            let base = match slice.state {
                State::Params => params,
                State::Grads { shard } => grads[shard],
                State::M => m,
                State::V => v,
            };
            // SAFETY: a chunk's slices lie inside their buffers (chunks cover P floats).
            unsafe { base.add(slice.offset).cast::<u8>() }
        };
        let optimizer = &self.plan.optimizer;
        let shard_sum_tables = optimizer
            .iter()
            .map(|c| table(&c.grad_sum, local))
            .collect();
        let adamw_tables = optimizer.iter().map(|c| table(&c.adamw, local)).collect();
        if let Some(ranks) = &mut self.ranks {
            // Pass 1, every chunk: this rank's shards, −0.0 for the others', the sum
            // into shard 0's buffer (or `partial` when shard 0 is another rank's).
            // Pass 2, this rank's own chunks only: rank r's subtree sum of the chunk (its
            // piece r of `mine`) at shard r·b, −0.0 elsewhere; the total lands in piece 0.
            ranks.size_for_jit();
            let block = ranks.block;
            let zero = ranks.minus_zero.as_mut_ptr().cast::<u8>();
            let (own, partial) = (ranks.own.clone(), ranks.partial.as_mut_ptr());
            let rank = ranks.exchange.rank();
            let (run, span) = (ranks.runs[rank].clone(), ranks.spans[rank].clone());
            let (mine, piece) = (ranks.mine.as_mut_ptr(), ranks.piece);
            // SAFETY (both passes): offsets stay inside each buffer (chunks cover P
            // floats; an owned chunk lies inside its owner's span, a piece long).
            let first = |slice: &StateSlice| match slice.state {
                State::Grads { shard } if !own.contains(&shard) => match shard {
                    0 => unsafe { partial.add(slice.offset).cast() },
                    _ => zero,
                },
                _ => local(slice),
            };
            let second = |slice: &StateSlice| match slice.state {
                State::Grads { shard } => match shard.is_multiple_of(block) {
                    true => unsafe {
                        let at = (shard / block) * piece + slice.offset - span.start;
                        mine.add(at).cast()
                    },
                    false => zero,
                },
                _ => local(slice),
            };
            let first = optimizer
                .iter()
                .map(|c| table(&c.grad_sum, first))
                .collect();
            let second = (optimizer[run].iter())
                .map(|c| table(&c.grad_sum, second))
                .collect();
            ranks.tables = Some((first, second));
        }
        // The weight-panel kernels' tables: a weight (parameters) and its two panels.
        let panel_tables = (self.plan.panels.iter())
            .map(|step| {
                let mut pointers = Vec::new();
                step.visit(|_, id| {
                    let place = self.places[id.0];
                    let base = match place.region {
                        super::Region::Params => params,
                        super::Region::Panels => panels,
                        region => unreachable!("a weight panel step reads no {region:?}"),
                    };
                    pointers.push(base.wrapping_add(place.offset).cast());
                });
                Table(pointers)
            })
            .collect();
        self.panels_stale = true; // made by this program's kernels before their first read
        self.program = Some(Bound {
            program,
            panel_tables,
            shard_sum_tables,
            adamw_tables,
        });
    }
}

/// The argument table of a step run alone: its slots in argument order (the order
/// codegen numbered them in), each resolved by `at`.
fn table(step: &Step<StateSlice>, at: impl Fn(&StateSlice) -> *mut u8) -> Table {
    let mut pointers = Vec::new();
    step.visit(|_, slice| pointers.push(at(slice)));
    Table(pointers)
}

//! Evaluation: validation loss on fixed batches, and for the addition task the
//! exact-match accuracy of greedy decoding on the held-out problems.

use crate::data::{Addition, Batch, Dataset};
use crate::machine::Machine;
use crate::rng::Rng;
use crate::runtime::sampler::{Sampler, Sampling};

/// Held-out problems between two progress reports.
pub const PROGRESS_EVERY: usize = 1000;

/// Mean loss per scored target over `batches` fixed validation batches.
pub fn validation_loss(
    machine: &mut Machine<f32>,
    data: &Dataset,
    batches: usize,
    scratch: &mut Batch,
) -> f64 {
    let (mut sum, mut scored) = (0.0, 0usize);
    for index in 0..batches {
        data.val_batch(index, scratch);
        sum += machine.forward_batch(scratch);
        scored += scratch.scored();
    }
    sum / scored.max(1) as f64
}

/// [`addition_accuracy`] of the model in `machine` (its parameters, its pattern's mask),
/// decoded through the machine's graph.
pub fn machine_accuracy(
    machine: &Machine<f32>,
    task: &Addition,
    progress: impl FnMut(usize, usize),
) -> Result<(usize, usize), super::RunError> {
    let params = (0..machine.graph().params.len())
        .map(|i| machine.param(i))
        .collect();
    let mask = machine.plan().pattern.as_ref().map(|p| p.mask());
    let mut sampler =
        Sampler::new(machine.graph(), machine.plan().arithmetic(), params)?.with_mask(mask);
    Ok(addition_accuracy(&mut sampler, task, progress))
}

/// How many held-out problems greedy decoding gets exactly right, out of how many;
/// `progress(done, total)` hears every [`PROGRESS_EVERY`] problems (a 500 000-problem
/// evaluation ran for minutes without a word).
pub fn addition_accuracy(
    sampler: &mut Sampler<'_>,
    task: &Addition,
    mut progress: impl FnMut(usize, usize),
) -> (usize, usize) {
    let mut right = 0;
    let mut rng = Rng::new(0); // unused by greedy decoding
    for (done, &problem) in task.held_out.iter().enumerate() {
        if done % PROGRESS_EVERY == 0 {
            progress(done, task.held_out.len());
        }
        let prompt: Vec<u32> = task.prompt(problem).bytes().map(u32::from).collect();
        let answer = task.answer(problem);
        let out = sampler.generate(&prompt, answer.len(), Sampling::GREEDY, &mut rng, |_| false);
        if out.iter().map(|&t| t as u8).eq(answer.bytes()) {
            right += 1;
        }
    }
    (right, task.held_out.len())
}

/// What [`evaluate_checkpoint`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// The checkpoint's step.
    pub step: u64,
    /// Mean loss per scored target over `eval.batches` validation batches.
    pub val_loss: f64,
    /// Exact-match accuracy on the held-out problems (addition only): (right, total).
    pub accuracy: Option<(usize, usize)>,
}

/// The model in `checkpoint`, evaluated as a run of `spec` evaluates it (the same
/// batches, the same greedy decoding), without training.
pub fn evaluate_checkpoint(
    spec: &crate::spec::Spec,
    base_dir: &std::path::Path,
    checkpoint: &std::path::Path,
) -> Result<Evaluation, super::RunError> {
    let super::session::Session {
        mut machine, data, ..
    } = super::session::assemble(
        spec,
        crate::plan::PassOptions::default(),
        base_dir,
        super::Backend::Jit,
        None,
    )?;
    let step = super::session::restore(&mut machine, checkpoint)?.step;
    let mut scratch = Batch::new(
        spec.train.micro_batch() as usize,
        spec.model.context as usize,
    );
    let pool = machine.pool();
    pool.install(|| {
        let val_loss = validation_loss(
            &mut machine,
            &data,
            spec.eval.batches as usize,
            &mut scratch,
        );
        let accuracy = (data.addition())
            .map(|task| machine_accuracy(&machine, task, |_, _| {}))
            .transpose()?;
        Ok(Evaluation {
            step,
            val_loss,
            accuracy,
        })
    })
}

//! The optimizer's chunk steps (`plan/optimizer.rs`) on the machine's buffers: one
//! addition of the gradient tree, Σ g² of a buffer, AdamW — compiled, or through the
//! reference's `run_step`, with each slot pointed where the caller says. The pointers
//! go on the stack, so a step on the JIT path allocates nothing.

use cllm_kernels::Real;
use cllm_kernels::adamw::AdamWStep;
use cllm_kernels::reference::{Buf, Scalars, run_step};

use crate::codegen::Program;
use crate::plan::grads::GROUP;
use crate::plan::ir::Step;
use crate::plan::optimizer::{ChunkSteps, StateSlice};

/// Which of a chunk's steps.
#[derive(Clone, Copy, Debug)]
pub(super) enum ChunkStep {
    /// `Sum += Addend(0)`, returning Σ Sum².
    Pair,
    /// `Sum` = the fixed tree over `Sum`, `Addend(0..)`, returning Σ Sum².
    Group,
    /// Σ Sum².
    Squares,
    AdamW(AdamWStep),
}

/// The chunk steps of a plan and, when attached, their compiled kernels.
#[derive(Clone, Copy)]
pub(super) struct Chunks<'a> {
    pub steps: &'a [ChunkSteps],
    pub program: Option<&'a Program>,
    /// A pipeline stage's packed gradient buffers: per chunk, how far (in floats) it
    /// sits from its place in the whole model's parameters, or `None` for a chunk the
    /// stage never writes (the tree's additions skip it). `None`: every buffer is laid
    /// out as the whole model's parameters.
    pub shifts: Option<&'a [Option<isize>]>,
}

impl<'a> Chunks<'a> {
    /// A plan's chunk steps with the compiled program, when one is bound.
    pub(super) fn of(plan: &'a crate::plan::Plan, bound: &'a Option<super::Bound>) -> Self {
        Chunks {
            steps: &plan.optimizer,
            program: bound.as_ref().map(|b| &b.program),
            shifts: None,
        }
    }
}

/// The most slots a chunk step has (AdamW's four, a group's).
const MOST_SLOTS: usize = if GROUP > 4 { GROUP } else { 4 };

impl Chunks<'_> {
    /// Runs `which` step of chunk `i` with each slot at `at(slot's slice)` (a pointer to
    /// the chunk's first float); returns what the step returns (Σ g² for a sum).
    ///
    /// # Safety
    /// Every pointer `at` gives must point at the slice's `len` floats, which no one
    /// else touches while the step runs; the slots' floats do not overlap.
    pub unsafe fn run<T: Real>(
        &self,
        which: ChunkStep,
        i: usize,
        at: impl Fn(&StateSlice) -> *mut T,
    ) -> f64 {
        let steps = &self.steps[i];
        let (step, adamw) = match which {
            ChunkStep::Pair => (&steps.pair, None),
            ChunkStep::Group => (&steps.group, None),
            ChunkStep::Squares => (&steps.squares, None),
            ChunkStep::AdamW(h) => (&steps.adamw, Some(h)),
        };
        let mut pointers = [std::ptr::null_mut::<T>(); MOST_SLOTS];
        let mut n = 0;
        step.visit(|_, slice| {
            pointers[n] = at(slice);
            n += 1;
        });
        let Some(program) = self.program else {
            // SAFETY: forwarded to the caller.
            return unsafe { reference(step, &pointers[..n], adamw) };
        };
        let kernel = match which {
            ChunkStep::Pair => program.pair[i],
            ChunkStep::Group => program.group[i],
            ChunkStep::Squares => program.squares[i],
            ChunkStep::AdamW(_) => program.adamw[i],
        };
        let table = pointers.map(|p| p.cast::<u8>());
        let scalars = adamw.map_or([0.0; 8], |h| *h.scalars().as_array());
        // SAFETY: the kernel was compiled from this step, whose slots (in argument
        // order, as `visit` gives them) are at the pointers the caller vouches for.
        unsafe { kernel(table.as_ptr(), scalars.as_ptr()) }
    }
}

/// The reference back end of one chunk step.
///
/// # Safety
/// As [`Chunks::run`].
unsafe fn reference<T: Real>(
    step: &Step<StateSlice>,
    pointers: &[*mut T],
    adamw: Option<AdamWStep>,
) -> f64 {
    let mut next = pointers.iter();
    let bufs = step.clone().map(|slot, slice| {
        let p = *next.next().expect("one pointer per slot");
        // SAFETY: forwarded to the caller.
        let floats = unsafe { std::slice::from_raw_parts_mut(p, slice.len) };
        if slot.writes {
            Buf::Out(floats)
        } else {
            Buf::In(&*floats)
        }
    });
    let scalars = Scalars {
        adamw,
        ..Scalars::default()
    };
    run_step(bufs, &scalars)
}

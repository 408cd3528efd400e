//! Saving a run's state: the whole state from this process (over data-parallel ranks,
//! the moments gathered first; rank 0 writes), or over pipeline stages streamed from the
//! stage that holds each tensor to rank 0; never a non-finite state.

use std::path::Path;

use super::trainer::State;
use crate::checkpoint::{self, Snapshot};
use crate::data::Dataset;
use crate::machine::Machine;
use crate::runtime::{RunError, RunOptions};
use crate::spec::Spec;

/// Saves the run's state to `path` (every rank calls it at the same point).
pub(super) fn save(
    state: &mut State,
    path: &Path,
    spec: &Spec,
    data: &Dataset,
    options: &RunOptions,
) -> Result<(), RunError> {
    if state.machine.state_on_first_stage() {
        return save_from_stages(state, path, spec, data, options);
    }
    // Over ranks each owner updated its run of the moments: every rank gathers them.
    state.machine.gather_moments();
    if let Some(tensor) = non_finite(&state.machine) {
        return Err(RunError::NonFiniteState {
            step: state.step,
            tensor,
        });
    }
    if options.ranks.as_ref().is_some_and(|r| r.rank() != 0) {
        return Ok(()); // every rank holds the same state; rank 0 writes it
    }
    let graph = state.machine.graph();
    let mut tensors = Vec::new();
    for (i, p) in graph.params.iter().enumerate() {
        tensors.push((p.name.clone(), p.shape.clone(), state.machine.param(i)));
    }
    for (i, p) in graph.params.iter().enumerate() {
        let (m, v) = state.machine.moments(i);
        let [m_name, v_name] = checkpoint::moment_names(&p.name);
        tensors.push((m_name, p.shape.clone(), m));
        tensors.push((v_name, p.shape.clone(), v));
    }
    let snapshot = snapshot((state.step, &state.cursor), spec, data, options, tensors);
    Ok(checkpoint::save(path, &snapshot)?)
}

/// Rank 0's hold on the run folder ([`crate::run_folder::claim`]), once its disk is
/// known to hold the checkpoints a run starting at `step` will write: 12 bytes a
/// parameter, twice at once when a save replaces a checkpoint this run has made.
pub(super) fn claim_run_folder(
    spec: &Spec,
    options: &RunOptions,
    step: u64,
) -> Result<crate::run_folder::RunFolderLock, RunError> {
    use crate::run_folder::{Claim, claim, ensure_room};
    let lock = claim(
        &options.run_dir,
        match options.resume {
            Some(_) => Claim::Resume,
            None => Claim::Fresh {
                overwrite: options.overwrite,
            },
        },
    )?;
    let every = spec.checkpoint.every;
    let saves_twice = (step / every + 1).saturating_mul(every) < spec.train.steps;
    let copies = match options.run_dir.join(checkpoint::FILE_NAME).exists() {
        true => 1,
        false => 1 + u64::from(saves_twice),
    };
    let bytes = 12 * spec.model.parameter_count() as u64;
    ensure_room(&options.run_dir, bytes, copies)?;
    Ok(lock)
}

/// The checkpoint's metadata (and `tensors`) for the run's state.
fn snapshot<'a>(
    (step, cursor): (u64, &'a crate::data::Cursor),
    spec: &Spec,
    data: &Dataset,
    options: &'a RunOptions,
    tensors: Vec<(String, Vec<usize>, &'a [f32])>,
) -> Snapshot<'a> {
    let spec_json = serde_json::to_string(spec).expect("a Spec serializes");
    let words = data.tokenizer.words().map(|w| {
        (
            "words".to_string(),
            serde_json::to_string(&w).expect("strings serialize"),
        )
    });
    // Where the spec's relative paths start, so `cllm run --resume DIR` needs no spec.
    let base_dir = std::path::absolute(&options.base_dir)
        .unwrap_or_else(|_| options.base_dir.clone())
        .to_string_lossy()
        .into_owned();
    let fingerprint = data
        .fingerprint()
        .map(|f| (checkpoint::DATA.to_string(), f));
    let extra = words
        .into_iter()
        .chain(fingerprint)
        .chain([(checkpoint::BASE_DIR.to_string(), base_dir)])
        .chain([(
            checkpoint::KERNELS.to_string(),
            cllm_kernels::cpu::route(spec.train.precision),
        )]);
    Snapshot {
        step,
        cursor,
        spec_text: &options.spec_text,
        spec_json,
        extra: extra.collect(),
        tensors,
    }
}

/// Over pipeline stages: every tensor streamed from the stage that holds it to rank 0,
/// which writes the file (`checkpoint::save_streamed`) holding one tensor at a time
/// beside its own stage's state. Every rank learns every tensor's CRC-32 and whether
/// it is finite first, so all stop alike on a non-finite state.
fn save_from_stages(
    state: &mut State,
    path: &Path,
    spec: &Spec,
    data: &Dataset,
    options: &RunOptions,
) -> Result<(), RunError> {
    let table = state.machine.checkpoint_table();
    let graph = state.machine.graph();
    let mut names: Vec<(String, Vec<usize>)> = (graph.params.iter())
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    for p in &graph.params {
        for name in checkpoint::moment_names(&p.name) {
            names.push((name, p.shape.clone()));
        }
    }
    if let Some(k) = table.iter().position(|&(_, finite)| !finite) {
        state.machine.checkpoint_done();
        return Err(RunError::NonFiniteState {
            step: state.step,
            tensor: names[k].0.clone(),
        });
    }
    if !state.machine.holds_whole_state() {
        // The order rank 0 takes them in: by name, as the file lays them out.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].0.cmp(&names[b].0));
        state.machine.checkpoint_send(&order);
        state.machine.checkpoint_done();
        return Ok(());
    }
    let entries: Vec<checkpoint::Entry> = (names.into_iter().zip(&table))
        .map(|((name, shape), &(crc, _))| checkpoint::Entry { name, shape, crc })
        .collect();
    let State {
        machine,
        step,
        cursor,
    } = state;
    let mut buffer = Vec::new();
    let mut take = |k: usize, sink: &mut dyn FnMut(&[f32]) -> std::io::Result<()>| {
        if let Some(values) = machine.checkpoint_values(k) {
            return sink(values);
        }
        sink(machine.checkpoint_recv(k, &mut buffer))
    };
    let snapshot = snapshot((*step, cursor), spec, data, options, Vec::new());
    let written = checkpoint::save_streamed(path, &snapshot, &entries, &mut take);
    machine.checkpoint_done();
    Ok(written?)
}

/// The first parameter or AdamW moment holding a NaN or an infinity, by its checkpoint
/// name: checked before every save, so a diverged state never replaces a good
/// checkpoint (one pass over 3 × the parameters, only when saving).
fn non_finite(machine: &Machine<f32>) -> Option<String> {
    let bad = |x: &[f32]| !x.iter().all(|v| v.is_finite());
    let params = &machine.graph().params;
    for (i, p) in params.iter().enumerate() {
        let (m, v) = machine.moments(i);
        if bad(machine.param(i)) {
            return Some(p.name.clone());
        }
        let [m_name, v_name] = checkpoint::moment_names(&p.name);
        if bad(m) || bad(v) {
            return Some(if bad(m) { m_name } else { v_name });
        }
    }
    None
}

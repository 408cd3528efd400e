//! Initial weights from a GPT-2 safetensors file (the layout of Hugging Face's `gpt2`):
//! `wte`, `wpe`, `h.{i}.ln_1`, `h.{i}.attn.c_attn` (d, 3d), `h.{i}.attn.c_proj`,
//! `h.{i}.ln_2`, `h.{i}.mlp.c_fc`, `h.{i}.mlp.c_proj`, `ln_f`, each optionally under
//! `transformer.`. GPT-2's Conv1D matrices are (in, out); ours are (out, in), so those
//! four are transposed on the way in — unless the file is in PyTorch's `nn.Linear`
//! layout (nanoGPT's), (out, in) already, which a non-square one of them shows. A
//! tied file (no `lm_head`) loads into an untied model, the head a copy of `wte`. A checkpoint of cllm's own (its `format`
//! metadata says so) is already in our layout: its parameters are read as they are,
//! so fine-tuning from a run is `model.weights = "runs/NAME/checkpoint.safetensors"`.

use std::path::Path;

use super::{CheckpointError, Stored, load_some};
use crate::graph::names::{LM_HEAD, Part, WPE, WTE};

/// Our parameter names that GPT-2 stores transposed.
pub(super) fn is_conv1d(name: &str) -> bool {
    (Part::CONV1D.iter()).any(|part| name.ends_with(&format!("{}.weight", part.suffix())))
}

/// Reads every parameter `(name, shape)` from the GPT-2 file at `path`, in our layout.
pub fn import_gpt2(
    path: &Path,
    params: &[(String, Vec<usize>)],
) -> Result<Vec<Vec<f32>>, CheckpointError> {
    // Only the tensors the model reads are read (the file is mapped): a large file's
    // other tensors cost nothing.
    let wanted: std::collections::HashSet<String> = params
        .iter()
        .flat_map(|(name, _)| candidates(name))
        .chain(candidates(LM_HEAD))
        .chain(candidates(WTE))
        .collect();
    let mut stored = load_some(path, |name| wanted.contains(name))?;
    let ours = stored.metadata.get("format").map(String::as_str) == Some(super::FORMAT);
    let tied = !params.iter().any(|(name, _)| name == LM_HEAD);
    if tied && let Some((_, head)) = stored.tensors.get(LM_HEAD) {
        // Hugging Face files may store the tied head too (a copy of `wte`); a head
        // that differs belongs to an untied model, which a tied one would misread.
        let wte = [
            format!("{WTE}.weight"),
            format!("transformer.{WTE}.weight"),
            WTE.into(),
        ]
        .into_iter()
        .find_map(|k| stored.tensors.get(&k));
        if wte.is_none_or(|(_, wte)| wte != head) {
            return Err(super::CheckpointError::Unfit {
                path: path.to_path_buf(),
                reason: format!(
                    "its `{LM_HEAD}` differs from its token embedding: the model has an untied \
                     output head; set `model.tied_head = false` to load it"
                ),
            });
        }
    }
    if let Some(found) = layers_in(&stored.unread)
        && let Some(layers) = layers_in(&params.iter().map(|p| p.0.clone()).collect::<Vec<_>>())
        && found > layers
    {
        return Err(super::CheckpointError::Unfit {
            path: path.to_path_buf(),
            reason: format!(
                "it holds {found} layers and the spec's model has {layers}: set `model.layers = {found}` \
                 (a smaller model would silently drop layers {layers}..{})",
                found - 1
            ),
        });
    }
    // PyTorch's `nn.Linear` (nanoGPT's layout) stores the Conv1D matrices as (out, in)
    // already: a non-square one (c_attn's, c_fc's) says which layout the file has.
    let linear = !ours && linear_layout(&stored, params);
    // A file with a tied head (no `lm_head`) loads into an untied model: the head
    // starts as a copy of the token embedding, as it was in the tied model.
    let head_from_wte = !tied
        && !candidates(LM_HEAD)
            .iter()
            .any(|c| stored.tensors.contains_key(c));
    let mut out = Vec::with_capacity(params.len());
    for (name, shape) in params {
        if name == LM_HEAD && head_from_wte {
            let wte = params.iter().position(|(n, _)| n == WTE);
            let copied = wte.and_then(|i| out.get(i).cloned());
            if let Some(values) = copied {
                out.push(values);
                continue;
            }
        }
        let key = candidates(name)
            .iter()
            .find(|c| {
                // A tensor of another dtype under that name is the one meant: `take`
                // then says which dtype it is.
                let skipped = format!("{c} (");
                stored.tensors.contains_key(*c)
                    || stored.skipped.iter().any(|s| s.starts_with(&skipped))
            })
            .cloned()
            .unwrap_or_else(|| name.clone());
        if is_conv1d(name) && !ours && !linear {
            let (rows, cols) = (shape[0], shape[1]);
            let values = take_any(&mut stored, path, &key, &[cols, rows])?;
            let mut transposed = vec![0.0; values.len()];
            for i in 0..cols {
                for o in 0..rows {
                    transposed[o * cols + i] = values[i * rows + o];
                }
            }
            out.push(transposed);
        } else {
            out.push(take_any(&mut stored, path, &key, shape)?);
        }
    }
    Ok(out)
}

/// Whether the file's Conv1D matrices are stored (out, in), as PyTorch's `nn.Linear`
/// (nanoGPT) has them, rather than GPT-2's (in, out): decided by the first non-square
/// one found; false when every one is square or missing (then GPT-2's layout is meant).
fn linear_layout(stored: &Stored, params: &[(String, Vec<usize>)]) -> bool {
    for (name, shape) in params.iter().filter(|(n, _)| is_conv1d(n)) {
        let (rows, cols) = (shape[0], shape[1]);
        if rows == cols {
            continue;
        }
        for key in candidates(name) {
            if let Some((found, _)) = stored.tensors.get(&key) {
                return found[..] == [rows, cols];
            }
        }
    }
    false
}

/// One more than the largest layer index among `names` (`h.{i}.…`, optionally under
/// `transformer.`), if any name is a layer's.
fn layers_in(names: &[String]) -> Option<usize> {
    names
        .iter()
        .filter_map(|n| {
            let rest = n.strip_prefix("transformer.").unwrap_or(n);
            rest.strip_prefix("h.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map(|i| i + 1)
}

/// The names GPT-2 files store our parameter `name` under.
fn candidates(name: &str) -> [String; 4] {
    [
        name.to_string(),
        format!("{name}.weight"),
        format!("transformer.{name}"),
        format!("transformer.{name}.weight"),
    ]
}

fn take_any(
    stored: &mut Stored,
    path: &Path,
    key: &str,
    shape: &[usize],
) -> Result<Vec<f32>, CheckpointError> {
    // GPT-2's position table (1024 rows) is cut to the spec's context.
    let is_position_table = key.ends_with(WPE) || key.ends_with(&format!("{WPE}.weight"));
    if is_position_table
        && let Some((found, values)) = stored.tensors.get(key)
        && found.len() == 2
        && found[1] == shape[1]
        && found[0] >= shape[0]
    {
        let values = &values[..shape[0] * shape[1]];
        if !values.iter().all(|v| v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: path.to_path_buf(),
                name: key.to_string(),
            });
        }
        return Ok(values.to_vec());
    }
    stored.take(path, key, shape)
}

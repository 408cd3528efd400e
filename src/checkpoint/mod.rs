//! Checkpoints: safetensors files holding the parameters, AdamW's moments, the step,
//! the data cursor (RNG state) and the resolved spec. Written to a temporary file,
//! synced, then renamed over the old one, so a crash never leaves a torn checkpoint.

mod export;
mod gpt2;
pub mod hf_tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::data::Cursor;

pub use export::{ExportError, export_hf};
pub use gpt2::import_gpt2;

/// The file a run directory's checkpoint lives in.
pub const FILE_NAME: &str = "checkpoint.safetensors";
const FORMAT: &str = "cllm-checkpoint-1";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CheckpointError {
    #[error("cannot write checkpoint `{path}`")]
    #[diagnostic(
        code(cllm::checkpoint),
        help("check that the run folder is writable and the disk has room")
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read `{path}`")]
    #[diagnostic(
        code(cllm::checkpoint),
        help("give the run folder (or the .safetensors file) of an earlier `cllm run`")
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a readable safetensors file: {reason}")]
    #[diagnostic(code(cllm::checkpoint))]
    Format { path: PathBuf, reason: String },
    /// A readable file that does not fit its use here.
    #[error("`{path}` is a readable safetensors file, but {reason}")]
    #[diagnostic(code(cllm::checkpoint))]
    Unfit { path: PathBuf, reason: String },
    #[error(
        "`{path}` is corrupt at tensor `{name}`: its bytes do not match the checksum written with them"
    )]
    #[diagnostic(
        code(cllm::checkpoint),
        help(
            "the file changed after it was written (a damaged disk or copy); use an intact copy, or start the run again"
        )
    )]
    Corrupt { path: PathBuf, name: String },
    #[error("tensor `{name}` in `{path}` holds NaN or infinite values")]
    #[diagnostic(
        code(cllm::checkpoint),
        help(
            "the file is damaged, or was written from a diverged model (cllm never saves one); use another file"
        )
    )]
    NonFinite { path: PathBuf, name: String },
    #[error("`{path}` has no tensor `{name}`")]
    #[diagnostic(
        code(cllm::checkpoint),
        help("the file does not match this model; check `model` in the spec")
    )]
    Missing { path: PathBuf, name: String },
    #[error(
        "tensor `{name}` in `{path}` has shape {found:?}, but the spec's model needs {expected:?}"
    )]
    #[diagnostic(
        code(cllm::checkpoint),
        help("the file was written for a different model shape; check `model` in the spec")
    )]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// Named f32 tensors and string metadata, as stored.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
    /// Tensors of other dtypes passed over (masks, buffers), "name (dtype)", for a
    /// message that names them when a wanted tensor is missing.
    pub skipped: Vec<String>,
    /// Tensors not asked for (see [`load_some`]), by name.
    pub unread: Vec<String>,
}

/// What a training run saves.
#[derive(Clone, Debug)]
pub struct Snapshot<'a> {
    pub step: u64,
    pub cursor: &'a Cursor,
    pub spec_text: &'a str,
    /// The same spec as JSON, read back by `cllm sample` without re-validating paths.
    pub spec_json: String,
    /// Extra metadata (e.g. a word vocabulary).
    pub extra: Vec<(String, String)>,
    /// (name, shape, values) of every parameter, then every AdamW moment.
    pub tensors: Vec<(String, Vec<usize>, &'a [f32])>,
}

/// The metadata key of each tensor's CRC-32 (a JSON map of name to 8 hex digits),
/// checked whenever the tensor is read. Files without it (older cllm, other tools) load
/// unchecked.
const CHECKSUMS: &str = "crc32";

/// The metadata key of the fingerprint of the data a run trained on.
pub const DATA: &str = "data";

/// The metadata key of the kernels the run's numbers came from (`cpu::route`).
pub const KERNELS: &str = "kernels";

/// The metadata key of the folder a run's spec was in (its relative paths start there).
pub const BASE_DIR: &str = "base_dir";

/// The names AdamW's two moments of parameter `name` are stored under.
pub fn moment_names(name: &str) -> [String; 2] {
    [format!("adamw.m.{name}"), format!("adamw.v.{name}")]
}

/// Resolves a `--resume` or `sample` argument: a run folder or a checkpoint file.
pub fn locate(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(FILE_NAME)
    } else {
        path.to_path_buf()
    }
}

/// Writes `snapshot` to `path` atomically (temporary file, fsync, rename).
pub fn save(path: &Path, snapshot: &Snapshot<'_>) -> Result<(), CheckpointError> {
    let entries: Vec<Entry> = (snapshot.tensors.iter())
        .map(|(name, shape, values)| Entry {
            name: name.clone(),
            shape: shape.clone(),
            crc: crc_of(values),
        })
        .collect();
    save_streamed(path, snapshot, &entries, |k, sink| {
        sink(snapshot.tensors[k].2)
    })
}

/// A tensor of a checkpoint written by [`save_streamed`]: its name, shape and the
/// CRC-32 of its little-endian bytes ([`crc_of`]).
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub crc: u32,
}

/// The CRC-32 a checkpoint records for `values`.
pub fn crc_of(values: &[f32]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    each_le_chunk(values, |bytes| {
        crc.update(bytes);
        Ok(())
    })
    .expect("hashing does not fail");
    crc.finalize()
}

/// Writes a checkpoint of `entries` (and `snapshot`'s metadata; its tensors are not
/// read) to `path` atomically, the tensors' values streamed: `data(k, sink)` gives
/// entry k's values to `sink`, in one or more pieces. It is asked for every entry
/// exactly once, in name order, whatever happens to the file — so values that arrive
/// from elsewhere (a pipeline's other stages) are always taken — and nothing is copied
/// whole into memory.
pub fn save_streamed(
    path: &Path,
    snapshot: &Snapshot<'_>,
    entries: &[Entry],
    mut data: impl FnMut(usize, &mut dyn FnMut(&[f32]) -> std::io::Result<()>) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let fail = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("step".to_string(), snapshot.step.to_string());
    metadata.insert(
        "cursor".to_string(),
        serde_json::to_string(snapshot.cursor).expect("cursor serializes"),
    );
    metadata.insert("spec".to_string(), snapshot.spec_text.to_string());
    metadata.insert("spec_json".to_string(), snapshot.spec_json.clone());
    metadata.extend(snapshot.extra.iter().cloned());
    metadata.insert(
        "layout".to_string(),
        "matrices are (out, in), as in llm.c".to_string(),
    );
    // The safetensors layout: the data in name order (as the `safetensors` crate lays
    // it out), the header's keys sorted (serde_json's map is a BTreeMap), so two equal
    // runs write the same bytes.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[a].name.cmp(&entries[b].name));
    let mut header = serde_json::Map::new();
    let mut sums = serde_json::Map::new();
    let mut offset = 0;
    for &k in &order {
        let Entry { name, shape, crc } = &entries[k];
        sums.insert(name.clone(), format!("{crc:08x}").into());
        let end = offset + 4 * shape.iter().product::<usize>();
        let entry =
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]});
        header.insert(name.clone(), entry);
        offset = end;
    }
    metadata.insert(
        CHECKSUMS.to_string(),
        serde_json::to_string(&sums).expect("strings serialize"),
    );
    let metadata: serde_json::Map<String, serde_json::Value> =
        metadata.into_iter().map(|(k, v)| (k, v.into())).collect();
    header.insert("__metadata__".to_string(), metadata.into());
    let mut text = serde_json::to_vec(&header).expect("JSON serializes");
    // Padded with spaces to a multiple of 8 bytes, as the format requires.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut asked = 0;
    let written = crate::files::write_atomic_with(path, |file| {
        file.write_all(&(text.len() as u64).to_le_bytes())?;
        file.write_all(&text)?;
        for &k in &order {
            asked += 1;
            data(k, &mut |values| {
                each_le_chunk(values, |bytes| file.write_all(bytes))
            })?;
        }
        Ok(())
    });
    // The file failed part way (or never opened): the rest of the values still come.
    for &k in &order[asked..] {
        let _ = data(k, &mut |_| Ok(()));
    }
    written.map_err(fail)
}

/// `values` as little-endian bytes, a few KiB at a time.
fn each_le_chunk(
    values: &[f32],
    mut take: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut bytes = [0u8; 4 * 1024];
    for part in values.chunks(bytes.len() / 4) {
        for (to, x) in bytes.chunks_exact_mut(4).zip(part) {
            to.copy_from_slice(&x.to_le_bytes());
        }
        take(&bytes[..4 * part.len()])?;
    }
    Ok(())
}

/// Reads every f32 tensor and the metadata of a safetensors file.
pub fn load(path: &Path) -> Result<Stored, CheckpointError> {
    load_some(path, |_| true)
}

/// Reads the metadata and the f32 tensors `wanted` names of a safetensors file: the
/// file is memory-mapped, and only those tensors are read and converted (a 3 GB file
/// of which a small model uses a part costs that part), each checked against its
/// checksum when the file has one.
pub fn load_some(path: &Path, wanted: impl Fn(&str) -> bool) -> Result<Stored, CheckpointError> {
    let bytes = crate::files::map_regular(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_some(path, &bytes, wanted)
}

/// Every f32 tensor and the metadata of the safetensors bytes read from `path` (named
/// in errors only): any bytes give a [`Stored`] or an error, never a panic (the
/// `load_checkpoint` fuzz target holds it to that).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Stored, CheckpointError> {
    parse_some(path, bytes, |_| true)
}

fn parse_some(
    path: &Path,
    bytes: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<Stored, CheckpointError> {
    let format = |reason: String| CheckpointError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let sums: HashMap<String, String> = match metadata.get(CHECKSUMS) {
        Some(text) => serde_json::from_str(text)
            .map_err(|_| format(format!("its `{CHECKSUMS}` metadata is unreadable")))?,
        None => HashMap::new(),
    };
    let file = SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
    let mut tensors = HashMap::new();
    let mut skipped = Vec::new();
    let mut unread = Vec::new();
    for (name, view) in file.tensors() {
        if !wanted(&name) {
            unread.push(name);
            continue;
        }
        if let Some(sum) = sums.get(&name)
            && *sum != format!("{:08x}", crc32fast::hash(view.data()))
        {
            return Err(CheckpointError::Corrupt {
                path: path.to_path_buf(),
                name,
            });
        }
        // Most downloaded checkpoints are F16 or BF16: every float dtype converts to
        // the fp32 master weights (F64 rounds to nearest; too large for f32 becomes
        // infinite, which the finiteness check refuses).
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => (data.chunks_exact(4))
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => (data.chunks_exact(2))
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => (data.chunks_exact(2))
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => (data.chunks_exact(8))
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::BOOL | Dtype::U8 | Dtype::I64 => {
                // masks and buffers, not weights
                skipped.push(format!("{name} ({:?})", view.dtype()));
                continue;
            }
            other => {
                return Err(format(format!(
                    "tensor `{name}` is {other:?}; weights are read from F32, F16, BF16 or F64 tensors (convert the file, e.g. `model.float().save_pretrained(...)`)"
                )));
            }
        };
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(Stored {
        tensors,
        metadata,
        skipped,
        unread,
    })
}

impl Stored {
    /// The tensor `name`, checked against `expected` shape.
    pub fn take(
        &mut self,
        path: &Path,
        name: &str,
        expected: &[usize],
    ) -> Result<Vec<f32>, CheckpointError> {
        let Some((shape, values)) = self.tensors.remove(name) else {
            let prefix = format!("{name} (");
            return Err(match self.skipped.iter().find(|s| s.starts_with(&prefix)) {
                Some(skipped) => CheckpointError::Unfit {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor `{name}` is {}, not a float: weights are read from F32, F16, BF16 or F64 tensors",
                        &skipped[prefix.len()..skipped.len() - 1]
                    ),
                },
                None => CheckpointError::Missing {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                },
            });
        };
        if shape != expected {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: path.to_path_buf(),
                name: name.to_string(),
            });
        }
        Ok(values)
    }

    /// A metadata field, or a format error naming it.
    pub fn field(&self, path: &Path, key: &str) -> Result<&str, CheckpointError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckpointError::Unfit {
                path: path.to_path_buf(),
                reason: format!("it has no `{key}` in its metadata; was it written by `cllm run`?"),
            })
    }
}

#[cfg(test)]
mod streamed_tests;

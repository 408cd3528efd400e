//! A run folder as the subcommands that continue or read a run see it: its checkpoint,
//! the spec it ran (stored in the checkpoint, with every override it was started
//! with) and the folder that spec's relative paths start from.

use std::path::{Path, PathBuf};

use cllm::checkpoint::{self, Stored};
use cllm::spec::{self, Spec};

pub struct StoredRun {
    /// The checkpoint file.
    pub file: PathBuf,
    /// The folder it is in.
    pub run_dir: PathBuf,
    /// The resolved spec the run trained with, checked like a spec file.
    pub spec: Spec,
    /// The checkpoint's tensors and metadata.
    pub checkpoint: Stored,
    /// The spec's folder (older checkpoints do not record it).
    base_dir: Option<PathBuf>,
}

/// The run in `path`: a run folder, or a checkpoint file in one.
pub fn open(path: &Path) -> miette::Result<StoredRun> {
    let file = checkpoint::locate(path);
    if file.extension().is_some_and(|e| e == "cllm") {
        miette::bail!(
            help = "give the run folder (or its checkpoint.safetensors): cllm run --resume RUN_DIR, \
                    cllm sample RUN_DIR, cllm eval RUN_DIR",
            "`{}` is a spec, not a run folder or checkpoint",
            file.display()
        );
    }
    let run_dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let stored = checkpoint::load(&file)?;
    let json = stored.field(&file, "spec_json")?;
    let spec: Spec = serde_json::from_str(json).map_err(|e| {
        miette::miette!("the spec stored in `{}` is unreadable: {e}", file.display())
    })?;
    let spec = spec::check_stored(&spec, &format!("the spec stored in {}", file.display()))?;
    // The model the stored spec describes must fit before its graph is built (a
    // damaged or hand-edited spec of 10⁸ layers aborted `sample` allocating it).
    cllm::plan::admit(&spec, 1)?;
    let base_dir = stored.metadata.get(checkpoint::BASE_DIR).map(PathBuf::from);
    Ok(StoredRun {
        file,
        run_dir,
        spec,
        checkpoint: stored,
        base_dir,
    })
}

impl StoredRun {
    /// The run's spec with `overrides` on top, its files checked against its folder;
    /// and that folder.
    pub fn with_overrides(&self, overrides: &[String]) -> miette::Result<(Spec, PathBuf)> {
        let Some(base_dir) = &self.base_dir else {
            miette::bail!(
                help = "give the spec it was started with: cllm run SPEC --resume DIR",
                "`{}` does not say which folder its spec was in (it was written by an older cllm)",
                self.file.display()
            );
        };
        let name = format!("the spec stored in {}", self.file.display());
        let text = spec::to_cllm(&self.spec, false);
        Ok((
            spec::parse(&text, &name, base_dir, overrides)?,
            base_dir.clone(),
        ))
    }
}

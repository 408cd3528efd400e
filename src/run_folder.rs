//! A run folder as a unit: one process writes it at a time, and a fresh run never
//! replaces a run that is already there.
//!
//! The writer holds an advisory lock (`flock`, through `File::try_lock`) on
//! `cllm.lock` in the folder for as long as it runs; the file holds its process id, so
//! a second writer is refused naming it. The lock is released by the kernel when the
//! process ends however it ends (a crash, SIGKILL): there is no stale lock to remove.
//! Readers (`eval`, `sample`, `export`, `plot`) take no lock: the checkpoint and every
//! other file a run rewrites are only ever renamed into place
//! ([`crate::files::write_atomic`]), so a reader sees the old file or the new one.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in a run folder.
pub const LOCK_FILE: &str = "cllm.lock";

/// The files a run leaves in its folder (a fresh run into a folder holding a
/// checkpoint is refused; `--overwrite`, or a folder without a checkpoint, has them
/// all removed first).
const RUN_FILES: [&str; 4] = [
    crate::checkpoint::FILE_NAME,
    "metrics.jsonl",
    "loss.svg",
    "loss.png",
];

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RunFolderError {
    #[error("the run folder `{path}` is in use by another cllm process{}", pid.map_or(String::new(), |p| format!(" (pid {p})")))]
    #[diagnostic(
        code(cllm::run_folder),
        help(
            "two runs cannot write one folder: wait for that one to finish (or stop it), or give this run another `--out`"
        )
    )]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error("`{path}` already holds a run ({found}); a new run would replace it")]
    #[diagnostic(
        code(cllm::run_folder),
        help("continue it with `cllm run --resume {}`, start over in it with `--overwrite` (its checkpoint, metrics and plots are deleted), or give this run another `--out`", path.display())
    )]
    HoldsRun { path: PathBuf, found: String },
    #[error("cannot use `{path}` as a run folder")]
    #[diagnostic(
        code(cllm::run_folder),
        help("give `--out` a folder this user can create and write")
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the disk holding `{path}` has {} free; this run needs {} for its checkpoints, metrics and plots",
        crate::plan::human_bytes(*free),
        crate::plan::human_bytes(*needed)
    )]
    #[diagnostic(
        code(cllm::run_folder),
        help(
            "a checkpoint is {} (the weights and AdamW's two moments, in fp32) and is written whole beside the last one before it replaces it: free space on that disk, or give `--out` a folder on another",
            crate::plan::human_bytes(*checkpoint)
        )
    )]
    NoRoom {
        path: PathBuf,
        free: u64,
        needed: u64,
        checkpoint: u64,
    },
}

/// Room kept beyond the checkpoints: the header, `metrics.jsonl` and the loss plots.
const SLACK_BYTES: u64 = 1 << 20;

/// Refuses a run, before its first step, that could not save its checkpoints on the
/// disk holding `dir`: each save writes `checkpoint` bytes to a temporary file beside
/// the last checkpoint before replacing it, so `copies` is 1 for a run whose folder
/// holds its last checkpoint already (a resume) or that saves only once, else 2.
/// Hours of training must not end in "no space left" at the first save.
pub fn ensure_room(dir: &Path, checkpoint: u64, copies: u64) -> Result<(), RunFolderError> {
    let Some(free) = free_bytes(dir) else {
        return Ok(()); // a file system that does not say: the save reports any failure
    };
    let needed = checkpoint
        .saturating_mul(copies)
        .saturating_add(SLACK_BYTES);
    match free >= needed {
        true => Ok(()),
        false => Err(RunFolderError::NoRoom {
            path: dir.to_path_buf(),
            free,
            needed,
            checkpoint,
        }),
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string; `stat` is written by statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // Their widths are the platform's (u32 on some): the casts are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The lock on a run folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunFolderLock {
    _file: std::fs::File,
}

/// What the writer is about to do in the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new run: refused if the folder holds one, unless `overwrite` (then its files
    /// are deleted first).
    Fresh { overwrite: bool },
    /// Continue the run the folder holds.
    Resume,
}

/// Locks `dir` (created when missing) for this process, or says who holds it; then
/// makes sure a fresh run replaces nothing unasked, and removes the temporary files an
/// earlier writer that died left (no other writer can be using them now).
pub fn claim(dir: &Path, claim: Claim) -> Result<RunFolderLock, RunFolderError> {
    let io = |source| RunFolderError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "it is a file, not a folder",
        )));
    }
    // A link to a folder is followed (runs kept on another disk); a link to nothing
    // would otherwise fail below as "File exists".
    if std::fs::metadata(dir).is_err()
        && let Ok(target) = std::fs::read_link(dir)
    {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "it is a symbolic link to `{}`, which does not exist",
                target.display()
            ),
        )));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock_path = dir.join(LOCK_FILE);
    let mut file = open_lock(&lock_path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(RunFolderError::InUse {
                path: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    (|| {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    })()
    .map_err(io)?;
    if let Claim::Fresh { overwrite } = claim {
        let present: Vec<&str> = RUN_FILES
            .iter()
            .copied()
            .filter(|name| std::fs::symlink_metadata(dir.join(name)).is_ok())
            .collect();
        // A run is there once it has a checkpoint: metrics and plots alone are what a
        // run killed before its first checkpoint left, which nothing can resume.
        let holds_run = present.contains(&crate::checkpoint::FILE_NAME);
        if holds_run && !overwrite {
            return Err(RunFolderError::HoldsRun {
                path: dir.to_path_buf(),
                found: present.join(", "),
            });
        }
        for name in present {
            std::fs::remove_file(dir.join(name)).map_err(io)?;
        }
    }
    remove_stale_temporaries(dir);
    Ok(RunFolderLock { _file: file })
}

/// The lock file, opened (created when missing) without following a link or blocking
/// on a FIFO, and checked to be a regular file.
fn open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{LOCK_FILE}: {e} (is it a link?)")))?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{LOCK_FILE} is not a regular file"),
        ));
    }
    Ok(file)
}

/// Deletes what [`crate::files::write_atomic`] left when its process died mid-write,
/// and the fixed `.tmp` names older versions used. Only the link or file itself is
/// removed, never what a link points to.
fn remove_stale_temporaries(dir: &Path) {
    crate::files::remove_stale_temporaries(dir, |name| RUN_FILES.contains(&name));
    for name in RUN_FILES {
        let old = dir.join(format!("{name}.tmp"));
        if std::fs::symlink_metadata(&old).is_ok() {
            let _ = std::fs::remove_file(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held without a small disk (`tests/disk_room.rs` mounts one where it may).
    #[test]
    fn room_is_refused_past_the_free_space_and_granted_within_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_room(dir.path(), 0, 2).is_ok());
        let error = ensure_room(dir.path(), u64::MAX / 4, 2).unwrap_err();
        assert!(matches!(error, RunFolderError::NoRoom { .. }), "{error}");
        assert!(
            error.to_string().contains("free; this run needs"),
            "{error}"
        );
    }
}

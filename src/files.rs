//! Reading the files a user names — specs, corpora, weights, checkpoints — as regular
//! files only: a FIFO would block `open` forever, and `/dev/zero` never ends. The kind
//! and the size are checked from the file's metadata before it is opened.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// The whole of the regular file at `path`, refusing anything else (a FIFO, a device, a
/// socket, a folder) and anything over `limit` bytes, before opening it.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let meta = regular(path)?;
    if meta.len() > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {} bytes, over the limit of {limit}", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take`: a file that grows while it is read still stops at the limit.
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The metadata of the regular file at `path`; anything else (a FIFO, a device, a
/// socket, a folder) is an error saying what it is, found without opening it.
fn regular(path: &Path) -> std::io::Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, a device or a socket)"
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("it is {kind}")));
    }
    Ok(meta)
}

/// The limit for a spec file: specs are a page of text.
pub const SPEC_LIMIT: u64 = 16 << 20;
/// No limit beyond the file's own size (corpora, checkpoints, weights: the memory
/// budget and the machine bound what is done with them).
pub const ANY_SIZE: u64 = u64::MAX;

/// The regular file at `path` mapped read-only into memory (`memmap2`), refusing what
/// `read_regular` refuses. The bytes are paged in as they are read, never copied whole:
/// a corpus larger than memory can be trained on. An empty file maps to no bytes.
pub fn map_regular(path: &Path) -> std::io::Result<Mapped> {
    let meta = regular(path)?;
    if meta.len() == 0 {
        return Ok(Mapped(None));
    }
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is read-only and private to this process. Another process
    // truncating the file while it is mapped makes reads fault (SIGBUS): the binary
    // turns that into a message and exit 1 (`exit_cleanly_on_sigbus`).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOMEM) {
            let most = std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .map_or("?".into(), |t| t.trim().to_string());
            return Error::new(
                ErrorKind::OutOfMemory,
                format!(
                    "cannot map it: the process holds as many memory maps as the kernel allows \
                     (vm.max_map_count = {most}) or has no address space left; merge small files into fewer"
                ),
            );
        }
        e
    })?;
    Ok(Mapped(Some(map)))
}

/// Makes SIGBUS — what reading a memory-mapped file gives once another process has
/// truncated it (a data shard rewritten while a run trains on it) — end the process
/// with a message and exit 1 instead of a core dump. Files cllm writes are renamed into
/// place whole, so the run folder keeps its last checkpoint.
pub fn exit_cleanly_on_sigbus() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        const WORDS: &[u8] = b"\nerror: a memory-mapped input file (a data shard or a weights file) was truncated or replaced while cllm read it; stopped (exit 1). The run folder keeps its last checkpoint; do not rewrite input files while a run uses them.\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, WORDS.as_ptr().cast(), WORDS.len());
            libc::_exit(1);
        }
    }
    // SAFETY: a plain sigaction with a handler that only calls async-signal-safe
    // functions; the struct is zeroed, then its handler and mask set.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

/// A mapped file's bytes (see [`map_regular`]).
pub struct Mapped(Option<memmap2::Mmap>);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// An exclusive `flock` on the folder `dir` itself, for a command that writes several
/// files into it (`prepare`'s shards, `export`'s model and config): two at once would
/// leave a mix, each reporting its own. No file is left in the folder; the lock goes
/// with the returned handle (or the process). `Ok(None)`: another process holds it.
pub fn try_lock_folder(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let folder = std::fs::File::open(dir)?;
    match folder.try_lock() {
        Ok(()) => Ok(Some(folder)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Bytes written to `path` so that a reader, a crash or a second writer only ever sees
/// the old file or the new one: they go to a temporary file beside it, created new
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, so a planted file or link there is never written
/// through) under a name no other process uses, synced, then renamed over `path`
/// (rename replaces a link at `path` itself, never its target). The folder is created.
/// A failed write removes its temporary file and leaves `path` untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes (through a buffer), so a large file need
/// not be whole in memory first.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = temporary_beside(path);
    // Held while the file is written: an exit from a signal handler waits for none and
    // happens only between writes (see `exit_between_writes`).
    let _writing = WRITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let written = (|| {
        let mut file = std::io::BufWriter::new(create_new(&temporary)?);
        write(&mut file)?;
        let file = file
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        // The rename itself is durable once the folder is synced.
        if let Ok(folder) = std::fs::File::open(dir.unwrap_or(Path::new("."))) {
            let _ = folder.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Held by [`write_atomic`] while it writes.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Prints `last_words` on stderr and ends the process with `code`, unless a
/// [`write_atomic`] is under way (then returns false, and the write finishes): a second
/// Ctrl-C never leaves a checkpoint cut off or its temporary file behind. While it
/// exits, no write can start.
pub fn exit_between_writes(code: i32, last_words: &str) -> bool {
    let exit = || -> ! {
        use std::io::Write;
        let _ = std::io::stderr().write_all(last_words.as_bytes());
        std::process::exit(code)
    };
    match WRITING.try_lock() {
        Ok(_none_writing) => exit(),
        Err(std::sync::TryLockError::Poisoned(_)) => exit(),
        Err(std::sync::TryLockError::WouldBlock) => false,
    }
}

/// The prefix of every temporary file beside `name` ([`write_atomic`]'s): a hidden
/// name, so that a listing of the folder shows what it holds.
pub fn temporary_prefix(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp.");
    prefix
}

/// Deletes the temporary files a process that died mid-write left in `dir` (SIGKILL,
/// or a signal a command does not catch): hidden names `.NAME.tmp.…`, as
/// [`temporary_prefix`] makes them, whose NAME `ours` accepts. Only the link or file
/// itself is removed, never what a link points to. Call it holding the folder's lock,
/// so that no live writer's file is among them.
pub fn remove_stale_temporaries(dir: &Path, ours: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = (name.to_str())
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.rsplit_once(".tmp."))
            .is_some_and(|(of, _)| ours(of));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A temporary name beside `path` that no other process or call uses: the process id
/// and a counter.
fn temporary_beside(path: &Path) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = temporary_prefix(path.file_name().unwrap_or_default());
    name.push(format!("{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// A new file at `path`, opened for writing: never an existing one, never through a
/// symbolic link.
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
}

/// The regular file at `path` opened to append to (created when missing; emptied
/// first when `truncate`), refusing a symbolic link (`O_NOFOLLOW`), a FIFO (opened
/// without blocking, then checked), a device or a folder: a run's own files are only
/// ever written where they are.
pub fn open_append_regular(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(not_regular(path, &meta));
    }
    let file = std::fs::OpenOptions::new()
        .append(!truncate)
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| not_followed(path, e))?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, a device or a socket)",
        ));
    }
    if truncate {
        file.set_len(0)?;
    }
    Ok(file)
}

/// What is wrong with `path`, which is not a regular file.
fn not_regular(_path: &Path, meta: &std::fs::Metadata) -> Error {
    let kind = if meta.file_type().is_symlink() {
        "a symbolic link; cllm writes a run's files only where they are, never through a link"
    } else if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file (a FIFO, a device or a socket)"
    };
    Error::new(ErrorKind::InvalidInput, format!("it is {kind}"))
}

/// `error` from opening `path` with `O_NOFOLLOW`, said plainly when `path` is a link.
fn not_followed(path: &Path, error: Error) -> Error {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => not_regular(path, &meta),
        _ => error,
    }
}

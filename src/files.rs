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
    // truncating the file while it is mapped would make reads fault (SIGBUS): the
    // documented hazard of memory-mapped input, which corpora (written once, then
    // trained on) do not meet in practice.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Mapped(Some(map)))
}

/// A mapped file's bytes (see [`map_regular`]).
pub struct Mapped(Option<memmap2::Mmap>);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

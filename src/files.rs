//! Reading the files a user names — specs, corpora, weights, checkpoints — as regular
//! files only: a FIFO would block `open` forever, and `/dev/zero` never ends. The kind
//! and the size are checked from the file's metadata before it is opened.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// The whole of the regular file at `path`, refusing anything else (a FIFO, a device, a
/// socket, a folder) and anything over `limit` bytes, before opening it.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, a device or a socket)"
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("it is {kind}")));
    }
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

/// The limit for a spec file: specs are a page of text.
pub const SPEC_LIMIT: u64 = 16 << 20;
/// No limit beyond the file's own size (corpora, checkpoints, weights: the memory
/// budget and the machine bound what is done with them).
pub const ANY_SIZE: u64 = u64::MAX;

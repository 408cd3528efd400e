//! Documents from files: text (a whole file is a document) and JSON Lines (a line's
//! string under a key is a document), each file memory-mapped, never read whole into
//! memory. A source is one file, or every file of a folder with the source's
//! extension, sorted by name.

use std::path::{Path, PathBuf};

use super::DataError;
use crate::files::map_regular;

/// `path` itself, or every `*.{ext}` regular file in the folder `path`, sorted.
pub fn files(path: &Path, ext: &'static str) -> Result<Vec<PathBuf>, DataError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| DataError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    // A file of the source's kind that is not a regular file (a FIFO, a link to a
    // device, a broken link, a folder named `x.bin`) is refused, not skipped: training
    // on the rest would be a silent wrong result.
    for file in &files {
        if let Err(source) = std::fs::metadata(file).and_then(|m| match m.is_file() {
            true => Ok(()),
            false => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is not a regular file (a FIFO, a device, a socket or a folder)",
            )),
        }) {
            return Err(DataError::Unreadable {
                path: file.clone(),
                source,
            });
        }
    }
    if files.is_empty() {
        return Err(DataError::NoFiles {
            dir: path.to_path_buf(),
            ext,
        });
    }
    files.sort();
    Ok(files)
}

fn map(path: &Path) -> Result<crate::files::Mapped, DataError> {
    map_regular(path).map_err(|source| DataError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Calls `document` with each text file's bytes; refuses a source with no bytes at all.
pub fn text_documents(files: &[PathBuf], document: &mut dyn FnMut(&[u8])) -> Result<(), DataError> {
    let mut total = 0;
    for file in files {
        let bytes = map(file)?;
        total += bytes.len();
        document(&bytes);
    }
    if total == 0 {
        return Err(DataError::Empty {
            path: files[0].clone(),
        });
    }
    Ok(())
}

/// Calls `document` with the string under `key` of each line of each JSON Lines file
/// (blank lines are skipped); a line that is not such an object is an error naming
/// the file, the line and its byte offset.
pub fn jsonl_documents(
    files: &[PathBuf],
    key: &str,
    document: &mut dyn FnMut(&[u8]),
) -> Result<(), DataError> {
    let mut count = 0;
    for file in files {
        let mapped = map(file)?;
        // A UTF-8 byte-order mark (Windows editors write one) is not part of the JSON.
        const BOM: &[u8] = b"\xef\xbb\xbf";
        let bytes = mapped.strip_prefix(BOM).unwrap_or(&mapped);
        let mut offset = mapped.len() - bytes.len();
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let at = offset;
            offset += line.len() + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let bad = |reason: String| DataError::BadJsonl {
                path: file.clone(),
                line: index + 1,
                offset: at,
                reason,
            };
            let value: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
            let text = value
                .get(key)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad(format!("no string under \"{key}\"")))?;
            document(text.as_bytes());
            count += 1;
        }
    }
    if count == 0 {
        return Err(DataError::Empty {
            path: files[0].clone(),
        });
    }
    Ok(())
}

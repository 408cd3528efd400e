//! Text corpora: one file, or every `.txt` file of a folder (sorted by name, joined).

use std::path::Path;

use super::DataError;
use crate::files::{ANY_SIZE, read_regular};

/// Reads the corpus at `path`.
pub fn read_corpus(path: &Path) -> Result<Vec<u8>, DataError> {
    let unreadable = |source| DataError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let bytes = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(unreadable)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
            .collect();
        if files.is_empty() {
            return Err(DataError::NoTextFiles {
                dir: path.to_path_buf(),
            });
        }
        files.sort();
        let mut all = Vec::new();
        for file in files {
            let text = read_regular(&file, ANY_SIZE).map_err(|source| DataError::Unreadable {
                path: file.clone(),
                source,
            })?;
            all.extend_from_slice(&text);
            if !all.ends_with(b"\n") {
                all.push(b'\n');
            }
        }
        all
    } else {
        read_regular(path, ANY_SIZE).map_err(unreadable)?
    };
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

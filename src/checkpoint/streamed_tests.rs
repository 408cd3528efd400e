//! `save_streamed`: the file `save` writes, from values given in pieces; and every
//! entry's values asked for exactly once even when the file cannot be written.

use super::{Entry, Snapshot, crc_of, load, save, save_streamed};
use crate::data::Cursor;
use crate::rng::Rng;

fn snapshot<'a>(cursor: &'a Cursor, tensors: Vec<(String, Vec<usize>, &'a [f32])>) -> Snapshot<'a> {
    Snapshot {
        step: 7,
        cursor,
        spec_text: "cllm 0.1",
        spec_json: "{}".to_string(),
        extra: Vec::new(),
        tensors,
    }
}

fn values() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    // Not in name order, and one tensor longer than a write's few KiB.
    vec![
        (
            "wte".to_string(),
            vec![3, 1500],
            (0..4500).map(|x| x as f32 * 0.5).collect(),
        ),
        ("adamw.m.wte".to_string(), vec![2], vec![1.0, -2.0]),
        ("h.0.bias".to_string(), vec![4], vec![0.25; 4]),
    ]
}

fn entries(owned: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<Entry> {
    (owned.iter())
        .map(|(name, shape, v)| Entry {
            name: name.clone(),
            shape: shape.clone(),
            crc: crc_of(v),
        })
        .collect()
}

#[test]
fn streamed_in_pieces_writes_what_save_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cursor = Cursor {
        rng: Rng::new(1),
        windows: 3,
    };
    let owned = values();
    let tensors = owned
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), &v[..]))
        .collect();
    let whole = dir.path().join("whole.safetensors");
    save(&whole, &snapshot(&cursor, tensors)).unwrap();
    let entries = entries(&owned);
    let streamed = dir.path().join("streamed.safetensors");
    let mut asked = Vec::new();
    save_streamed(
        &streamed,
        &snapshot(&cursor, Vec::new()),
        &entries,
        |k, sink| {
            asked.push(k);
            owned[k].2.chunks(7).try_for_each(sink)
        },
    )
    .unwrap();
    assert_eq!(asked, [1, 2, 0], "in name order, each once");
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&streamed).unwrap()
    );
    let stored = load(&streamed).unwrap();
    for (name, shape, v) in &owned {
        assert_eq!(stored.tensors[name], (shape.clone(), v.clone()), "{name}");
    }
}

#[test]
fn every_entry_is_asked_for_when_the_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cursor = Cursor {
        rng: Rng::new(1),
        windows: 0,
    };
    let owned = values();
    let entries = entries(&owned);
    let mut asked = Vec::new();
    // Its folder is a file: the temporary file is never created.
    let path = file.join("checkpoint.safetensors");
    let result = save_streamed(
        &path,
        &snapshot(&cursor, Vec::new()),
        &entries,
        |k, sink| {
            asked.push(k);
            sink(&owned[k].2)
        },
    );
    assert!(result.is_err());
    assert_eq!(asked, [1, 2, 0], "every entry's values still taken, once");
}

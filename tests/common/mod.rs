//! Helpers shared by the integration tests.

/// Runs the `cllm` binary with `args` (stdin closed) and waits for it.
#[allow(dead_code)] // not every test that includes this module runs the binary
pub fn cllm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cllm runs")
}

/// Instantiates each test body once per back end (candle's habit): one body, two
/// tests, `interp::name` and `jit::name`, each given its `Backend`.
#[macro_export]
macro_rules! on_both_backends {
    ($(fn $name:ident($backend:ident) $body:block)*) => {
        mod interp {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { let $backend = cllm::runtime::Backend::Interp; $body } )*
        }
        mod jit {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { let $backend = cllm::runtime::Backend::Jit; $body } )*
        }
    };
}

/// Every tensor of the checkpoint in `dir` (parameters and AdamW moments) as bits,
/// sorted by name: two runs agree bit for bit when these are equal.
#[allow(dead_code)] // not every test that includes this module compares checkpoints
pub fn checkpoint_bits(dir: &std::path::Path) -> Vec<(String, Vec<u32>)> {
    let file = dir.join(cllm::checkpoint::FILE_NAME);
    let stored = cllm::checkpoint::load(&file).unwrap();
    let mut tensors: Vec<(String, Vec<u32>)> = (stored.tensors.into_iter())
        .map(|(name, (_, v))| (name, v.iter().map(|x| x.to_bits()).collect()))
        .collect();
    tensors.sort();
    tensors
}

/// The names of the tensors whose bits differ between two [`checkpoint_bits`].
#[allow(dead_code)] // not every test that includes this module compares checkpoints
pub fn differing<'a>(
    got: &'a [(String, Vec<u32>)],
    expected: &[(String, Vec<u32>)],
) -> Vec<&'a str> {
    (got.iter().zip(expected))
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.as_str())
        .collect()
}

/// Copies the files of a run folder (no subfolders).
#[allow(dead_code)] // not every test file that shares this module copies folders
pub fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `spec` on `ranks` ranks as threads of this process (`ThreadRanks`), each with its
/// options set by `how`; each rank's result, in rank order.
#[allow(dead_code)] // not every test file that shares this module runs ranks
pub fn on_thread_ranks(
    spec: &cllm::spec::Spec,
    ranks: usize,
    dir: &std::path::Path,
    how: impl Fn(&mut cllm::runtime::RunOptions),
) -> Vec<Result<cllm::runtime::RunSummary, cllm::runtime::RunError>> {
    let handles: Vec<_> = cllm::machine::ThreadRanks::group(ranks)
        .into_iter()
        .map(|exchange| {
            let mut options = cllm::runtime::RunOptions::new(dir, ".");
            options.quiet = true;
            options.ranks = Some(exchange);
            how(&mut options);
            let spec = spec.clone();
            std::thread::spawn(move || cllm::runtime::train(&spec, &options))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

//! The default job learns its task: `specs/add.cllm`, as shipped, trained by the
//! reference interpreter, must get at least 90% of its 1000 held-out 3-digit additions
//! exactly right by greedy decoding. (About three minutes on one core; measured
//! figures are in the closing notes and PERF.md, never asserted here.)

use std::path::Path;

use cllm::runtime::{self, RunOptions};
use cllm::spec;

#[test]
fn the_default_spec_learns_three_digit_addition() {
    let spec = spec::load(Path::new("specs/add.cllm"), &[]).expect("add.cllm checks");
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        quiet: true,
        spec_text: spec::to_cllm(&spec, false),
        ..RunOptions::new(dir.path().to_path_buf(), "specs")
    };
    let summary = runtime::train(&spec, &options).expect("training runs");
    let (right, total) = summary
        .accuracy
        .expect("the addition task reports accuracy");
    assert_eq!(total, 1000);
    assert!(
        right * 10 >= total * 9,
        "only {right}/{total} held-out problems right"
    );
}

//! The Cranelift IR of every kernel of tests/ir/tiny.cllm, snapshotted: any change to
//! code generation shows up as a reviewed diff (`cargo insta review`).

use std::path::Path;

use cllm::{codegen, plan, spec};

#[test]
fn tiny_spec_ir_is_stable() {
    let spec = spec::load(Path::new("tests/ir/tiny.cllm"), &[]).unwrap();
    let plan = plan::plan(&spec).unwrap();
    let program = codegen::compile(
        &plan,
        codegen::Checks {
            verify: true,
            optimize: true,
        },
    )
    .expect("compiles and verifies");
    let mut seen = std::collections::BTreeSet::new();
    for (index, (name, ir)) in program.ir().iter().enumerate() {
        // One snapshot per distinct kernel family name (repeats differ only in shapes).
        if seen.insert(name.clone()) {
            insta::assert_snapshot!(format!("ir_{index:02}_{name}"), ir);
        }
    }
    assert!(
        seen.contains("adamw")
            && seen.contains("attention")
            && seen.contains("logits_softmax_xent")
    );
}

/// The kernel IR that leaves the plan for bench-xs: every kernel's steps, shapes and
/// named argument slots. A change to lowering, fusion or recomputation shows up here.
#[test]
fn bench_xs_kernel_list_is_stable() {
    let spec = spec::load(Path::new("specs/bench-xs.cllm"), &[]).unwrap();
    let plan = plan::plan(&spec).unwrap();
    insta::assert_snapshot!("bench_xs_kernels", plan::kernel_listing(&plan));
}

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

/// The graph of bench-xs before any pass: every forward op and the backward ops
/// autodiff derived, with the name and shape of each input and output. A change to
/// the model's description or to a gradient rule shows up here.
#[test]
fn bench_xs_graph_is_stable() {
    use std::fmt::Write as _;
    let spec = spec::load(Path::new("specs/bench-xs.cllm"), &[]).unwrap();
    let micro_batch = spec.train.micro_batch() / spec.plan.shards;
    let graph = cllm::graph::build(&spec, micro_batch as usize);
    let tensor = |id: &cllm::graph::TensorId| {
        let t = graph.tensor(*id);
        format!("{}{:?}", t.name, t.shape)
    };
    let mut out = String::new();
    for (phase, ops) in [("forward", &graph.forward), ("backward", &graph.backward)] {
        let _ = writeln!(out, "{phase}:");
        for op in ops {
            let inputs: Vec<String> = op.inputs.iter().map(tensor).collect();
            let outputs: Vec<String> = op.outputs.iter().map(tensor).collect();
            let _ = writeln!(
                out,
                "  {:?}({}) -> {}",
                op.kind,
                inputs.join(", "),
                outputs.join(", ")
            );
        }
    }
    insta::assert_snapshot!("bench_xs_graph", out);
}

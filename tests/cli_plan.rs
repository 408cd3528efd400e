//! `cllm plan` as a user types it, and budget errors before anything is allocated.

mod common;
use common::cllm;

#[test]
fn plan_prints_the_table_json_and_svg() {
    let out = cllm(&["plan", "specs/bench-xs.cllm"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "kernels of one shard",
        "matmul_bias_gelu",
        "logits_softmax_xent",
        "peak",
        "naive sum",
        "recomputed in backward",
        "GFLOP per optimizer step",
    ] {
        assert!(text.contains(expected), "missing `{expected}`:\n{text}");
    }
    let out = cllm(&["plan", "specs/bench-xs.cllm", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(json["kernels"].as_array().is_some_and(|k| !k.is_empty()));
    assert!(json["arena"]["peak_bytes"].as_u64().is_some_and(|b| b > 0));

    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("arena.svg");
    let out = cllm(&[
        "plan",
        "specs/bench-xs.cllm",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!(
        "wrote the arena's buffer lifetimes to {}",
        svg.display()
    )));
    let picture = std::fs::read_to_string(svg).unwrap();
    assert!(
        picture.starts_with("<svg")
            && picture.trim_end().ends_with("</svg>")
            && picture.contains("<rect")
    );
    // Axes with titles, a legend, and names on the buffers large enough to hold them.
    for text in [
        "kernel (in execution order)",
        "offset in the arena (MiB)",
        ">activation gradient<",
        ">saved for backward<",
        ">forward | backward<",
        ">h.0.mlp.c_fc.out<",
    ] {
        assert!(picture.contains(text), "the arena picture lacks `{text}`");
    }
}

#[test]
fn a_small_masks_title_is_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("mask.svg");
    let out = cllm(&[
        "plan",
        "specs/add.cllm",
        "--set",
        "model.attention=window(4)",
        "--mask-svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let picture = std::fs::read_to_string(svg).unwrap();
    let width: f64 = picture
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The longer title line is ~60 characters of 12 px sans-serif: ~400 px.
    assert!(width >= 480.0, "{width} px at T = 16");
    assert!(picture.contains("attention mask, T = 16"));
}

#[test]
fn a_budget_too_small_is_refused_before_training() {
    for command in ["plan", "run"] {
        let out = cllm(&[
            command,
            "specs/bench-s.cllm",
            "--set",
            "plan.memory_budget=64 MiB",
        ]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("over the memory budget"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("plan.memory_budget"), "{command}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{command} started anyway: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn plan_shows_the_attention_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("mask.svg");
    let out = cllm(&[
        "plan",
        "specs/long-lattice.cllm",
        "--mask-svg",
        svg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "LLL-reduced basis (δ = 0.99): [[1, 0], [0, 1]]",
        "12 lattice vectors",
        "keys per query: min 1, mean 65.9, max 67; density 6.4% of dense causal",
        "64×64 blocks: 93 of dense's 528",
    ] {
        assert!(text.contains(expected), "missing `{expected}`:\n{text}");
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("6.4% of dense causal"));
    // A singular basis is refused by the spec check, pointing at the pattern.
    let out = cllm(&[
        "plan",
        "specs/long-lattice.cllm",
        "--set",
        "model.attention=lattice(grid(64), basis = [[1, 2], [2, 4]])",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("singular"));
}

#[test]
fn plan_predicts_the_step_on_every_thread_count() {
    let out = cllm(&[
        "plan",
        "specs/bench-xs.cllm",
        "--threads",
        "3",
        "--gflops",
        "50",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 thread(s)"),
        "planned for 3 threads:\n{text}"
    );
    let rows: Vec<&str> = (text.lines())
        .skip_while(|l| !l.contains("unsplit ms"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let threads: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(
        threads,
        ["1", "2", "3", "4", "8", "16", "32", "64", "128"],
        "{text}"
    );
    assert!(rows[2].ends_with("← plan.threads"), "{text}");
    assert!(rows[0].contains("100%"), "{text}");
    assert!(
        text.contains("the model's prediction, not a measurement"),
        "{text}"
    );
    assert!(
        text.contains("what does not split evenly over 128 threads"),
        "{text}"
    );
}

#[test]
fn plan_cuts_the_layers_into_pipeline_stages() {
    let out = cllm(&[
        "plan",
        "specs/bench-xs.cllm",
        "--stages",
        "2",
        "--gflops",
        "50",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = (text.lines())
        .skip_while(|l| !l.contains("ms/micro"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains("embeddings, h.0–h.1"), "{text}");
    assert!(rows[1].contains("h.2–h.3, head"), "{text}");
    assert!(text.contains("bubble (P − 1)/(m + P − 1) = 11%"), "{text}");
    assert!(text.contains("2 data-parallel rank(s)"), "{text}");
    assert!(text.contains("--set plan.stages=2"), "{text}");
    // Each stage's own arena is smaller than one process's, and stage 0 holds two.
    assert!(rows[0].contains(" 2 × "), "{text}");
    assert!(rows[1].contains(" 1 × "), "{text}");

    // bench-xs has 4 blocks: 5 stages cannot each hold one.
    let out = cllm(&["plan", "specs/bench-xs.cllm", "--stages", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("4 block(s)"), "{error}");
}

/// `plan --ranks` prices the exchange with and without `plan.overlap`: the all-to-all's
/// hidden part is its own column, never negative, and overlap never costs more.
#[test]
fn plan_prices_the_overlapped_exchange() {
    let rows = |overlap: &str| -> Vec<Vec<f64>> {
        let set = format!("plan.overlap={overlap}");
        let args = [
            "plan",
            "specs/bench-xs.cllm",
            "--ranks",
            "2",
            "--gflops",
            "50",
            "--network",
            "1Gbit,50us",
            "--threads",
            "1",
            "--set",
            &set,
        ];
        let out = cllm(&args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("hidden ms"), "{text}");
        (text.lines())
            .skip_while(|l| !l.contains("hidden ms"))
            .skip(1)
            .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| {
                let cells = l.split_whitespace().map(|c| c.trim_end_matches('%'));
                cells.map(|c| c.parse().unwrap()).collect()
            })
            .collect()
    };
    let (on, off) = (rows("true"), rows("false"));
    assert_eq!(on.len(), 7);
    for (a, b) in on.iter().zip(&off) {
        // ranks, compute, exchange, hidden, tree, step, efficiency
        assert_eq!(b[3], 0.0, "nothing is hidden without overlap");
        assert!(a[3] >= 0.0 && a[2] <= b[2] + 0.05, "{a:?} vs {b:?}");
    }
}

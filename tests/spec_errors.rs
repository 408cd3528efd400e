//! Malformed specs get diagnostics that point at the text and say how to fix it.
//! Each file under tests/bad_specs/ holds one mistake; its rendered diagnostic is
//! snapshotted, and must show line:column and a help line.

mod common;
use common::cllm;

use std::path::Path;

use cllm::spec;

fn diagnostic_for(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("bad spec is readable");
    let name = format!("bad_specs/{}", path.file_name().unwrap().to_string_lossy());
    // The folder as a relative path, so that diagnostics naming it do not depend on
    // where the repository is checked out.
    let folder = Path::new("tests/bad_specs");
    assert!(folder.join(path.file_name().unwrap()).is_file());
    let error = spec::parse(&text, &name, folder, &[]).expect_err("a bad spec must not check");
    spec::render_plain(&error)
}

#[test]
fn every_bad_spec_gets_a_located_actionable_diagnostic() {
    let mut count = 0;
    insta::glob!("bad_specs/*.cllm", |path| {
        let rendered = diagnostic_for(path);
        let located = regex_like_line_column(&rendered);
        assert!(
            located,
            "no line:column in the diagnostic for {}:\n{rendered}",
            path.display()
        );
        assert!(
            rendered.contains("help:"),
            "no help in the diagnostic for {}:\n{rendered}",
            path.display()
        );
        insta::assert_snapshot!(rendered);
        count += 1;
    });
    assert!(
        count >= 30,
        "expected at least 30 malformed specs, found {count}"
    );
}

/// True when the text holds `[name:LINE:COLUMN]`, the way miette prints a location.
fn regex_like_line_column(text: &str) -> bool {
    text.split('[').skip(1).any(|rest| {
        let inside = rest.split(']').next().unwrap_or("");
        let mut parts = inside.rsplitn(3, ':');
        let column = parts.next().unwrap_or("");
        let line = parts.next().unwrap_or("");
        !line.is_empty()
            && !column.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
            && column.chars().all(|c| c.is_ascii_digit())
    })
}

#[test]
fn overrides_are_checked_like_the_file() {
    let cases = [
        ("train.stepz=10", "did you mean `steps`?"),
        ("train.steps=ten", "expected a number"),
        ("steps=10", "expected"),
        ("train.optimizer.lr=1e-3", "`--set` takes `block.key=value`"),
        ("model.heads=7", "not a multiple of heads"),
    ];
    for (text, expected) in cases {
        let error = spec::load(Path::new("specs/add.cllm"), &[text.to_string()])
            .expect_err("a bad override must not check");
        let rendered = spec::render_plain(&error);
        assert!(
            rendered.contains(expected),
            "`--set {text}` rendered:\n{rendered}"
        );
        assert!(
            rendered.contains("--set"),
            "`--set {text}` does not name its source:\n{rendered}"
        );
    }
}

#[test]
fn errors_are_all_reported_not_just_the_first() {
    let text = "cllm 0.1\nmodel gpt { head = 6  widht = 64 }\ntrain { stepz = 1 }\n";
    let error = spec::parse(text, "three", Path::new("."), &[]).expect_err("three mistakes");
    assert_eq!(error.count(), 3);
}

#[test]
fn cli_check_accepts_every_shipped_spec() {
    let specs: Vec<String> = std::fs::read_dir("specs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cllm"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(specs.len() >= 6);
    let mut args = vec!["check"];
    args.extend(specs.iter().map(String::as_str));
    let out = cllm(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_check_points_at_head_and_suggests_heads() {
    let out = cllm(&["check", "tests/bad_specs/04-unknown-key-head.cllm"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `heads`?"), "{stderr}");
    assert!(stderr.contains("04-unknown-key-head.cllm:4:3"), "{stderr}");
}

#[test]
fn cli_check_reports_a_missing_spec_file() {
    let out = cllm(&["check", "specs/no-such-spec.cllm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read spec"));
}

#[test]
fn cli_resolved_and_json_outputs_parse_back() {
    let out = cllm(&["check", "specs/add.cllm", "--resolved"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let reparsed =
        spec::parse(&text, "resolved", Path::new("specs"), &[]).expect("resolved parses");
    assert_eq!(
        reparsed,
        spec::load(Path::new("specs/add.cllm"), &[]).unwrap()
    );

    // The comments list every source and every vocabulary there is.
    let comment = |key: &str| {
        (text.lines())
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split_once('#'))
            .map(|(_, c)| c.to_string())
            .unwrap_or_default()
    };
    for source in ["addition(", "text(", "jsonl(", "tokens("] {
        assert!(comment("source").contains(source), "{source}: {text}");
    }
    for vocab in ["bytes", "words(", "gpt2"] {
        assert!(comment("vocab").contains(vocab), "{vocab}: {text}");
    }

    let out = cllm(&["check", "specs/add.cllm", "--json"]);
    assert!(out.status.success());
    let from_json: spec::Spec = serde_json::from_slice(&out.stdout).expect("JSON is a Spec");
    assert_eq!(from_json, reparsed);
}

/// Runs `cllm check` on `text` written to a temporary file, plus `args`.
fn check_text(text: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.cllm");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["check", path.to_str().unwrap()];
    all.extend_from_slice(args);
    cllm(&all)
}

#[test]
fn deep_nesting_is_refused_with_a_location_not_a_stack_overflow() {
    // Balanced, so the parser accepts it and only the tree walk would recurse (the
    // text that overflowed the stack before).
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let text = format!("cllm 0.1\nmodel gpt {{ attention = {deep} }}\n");
    let out = check_text(&text, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nest deeper than 64"), "{stderr}");
    assert!(stderr.contains(":2:"), "no line:column in:\n{stderr}");
    let set = format!("model.attention={deep}");
    let out = cllm(&["check", "specs/add.cllm", "--set", &set]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nest deeper") && stderr.contains("--set"),
        "{stderr}"
    );
    // 64 levels are still only a type error, not a refusal of the text.
    let fine = format!(
        "cllm 0.1\nmodel gpt {{ attention = {}1{} }}\n",
        "[".repeat(64),
        "]".repeat(64)
    );
    let stderr = String::from_utf8_lossy(&check_text(&fine, &[]).stderr).to_string();
    assert!(!stderr.contains("nest deeper"), "{stderr}");
}

#[test]
fn a_problem_past_column_65535_renders_readably() {
    let text = format!("cllm 0.1\nmodel gpt {{{}head = 6 }}\n", " ".repeat(65_525));
    let out = check_text(&text, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did you mean `heads`?"), "{stderr}");
    assert!(stderr.contains(":2:65537"), "no line:column in:\n{stderr}");
    assert!(
        stderr.len() < 4000,
        "the whole line was printed: {} bytes",
        stderr.len()
    );
    let set = format!("model.attention=window({}x)", " ".repeat(70_000));
    let out = cllm(&["check", "specs/add.cllm", "--set", &set]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hints_for_huge_values_are_instant() {
    let started = std::time::Instant::now();
    let error = spec::load(
        Path::new("specs/add.cllm"),
        &["model.heads=10000000000".into()],
    )
    .expect_err("heads does not divide the width");
    let rendered = spec::render_plain(&error);
    assert!(
        rendered.contains("try `heads = 64`") || rendered.contains("try `heads ="),
        "{rendered}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the hint scanned"
    );
    assert_eq!(spec::largest_divisor_at_most(384, 10_000_000_000), 384);
    assert_eq!(spec::largest_divisor_at_most(384, 7), 6);
    assert_eq!(spec::largest_divisor_at_most(97, 50), 1);
    assert_eq!(spec::largest_divisor_at_most(36, 6), 6);
    assert_eq!(spec::largest_divisor_at_most(0, 5), 1);
}

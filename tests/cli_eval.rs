//! `cllm eval RUN_DIR` reports what the run itself reported at its end: the same
//! validation loss (the same batches, the same weights) and accuracy, without training.

mod common;
use common::cllm;

/// The text after `key ` up to the next comma or the end of the line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("`{key}` in {line:?}"))
        + key.len()
        + 1;
    line[at..].split([',', ';']).next().unwrap().trim()
}

#[test]
fn eval_reports_what_the_run_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run").display().to_string();
    let run = cllm(&[
        "run",
        "specs/add.cllm",
        "--quiet",
        "--steps",
        "30",
        "--out",
        &dir,
        "--set",
        "data.source=addition(digits = 2, held_out = 40)",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let done = String::from_utf8_lossy(&run.stdout).into_owned();
    let eval = cllm(&["eval", &dir, "--threads", "1"]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let report = String::from_utf8_lossy(&eval.stdout).into_owned();
    assert!(report.starts_with("step 30: "), "{report}");
    assert_eq!(
        field(&report, "accuracy"),
        field(&done, "accuracy"),
        "{done} / {report}"
    );
    let loss: f64 = field(&report, "val_loss").parse().unwrap();
    let done_loss: f64 = field(&done, "val_loss").parse().unwrap();
    assert!((loss - done_loss).abs() <= 5e-5, "{done} / {report}");
    // Enough digits to compare with metrics.jsonl's last evaluation (full precision).
    let metrics = std::fs::read_to_string(format!("{dir}/metrics.jsonl")).unwrap();
    let logged: f64 = (metrics.lines().rev())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "eval")
        .and_then(|v| v["val_loss"].as_f64())
        .expect("an evaluation in metrics.jsonl");
    assert!(
        (loss - logged).abs() <= 5e-7,
        "{loss} vs metrics.jsonl's {logged}"
    );
    let perplexity: f64 = field(&report, "perplexity")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((perplexity - loss.exp()).abs() < 0.01, "{report}");
    // A missing run is a clear error.
    let missing = cllm(&["eval", &format!("{dir}/nowhere")]);
    assert_eq!(missing.status.code(), Some(1));
}

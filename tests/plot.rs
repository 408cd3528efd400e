//! `cllm plot` and the picture `cllm run` leaves: loss and learning rate against step,
//! several runs overlaid with a legend, as SVG and PNG.

mod common;
use common::cllm;

#[test]
fn runs_are_drawn_overlaid_with_a_legend() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    for (name, attention) in [("dense", "dense"), ("windowed", "window(8)")] {
        let out = cllm(&[
            "run",
            "specs/add.cllm",
            "--steps",
            "120",
            "--set",
            &format!("model.attention={attention}"),
            "--set",
            "eval.every=60",
            "--out",
            &d(name),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `cllm run` leaves its own picture.
        let svg = std::fs::read_to_string(dir.path().join(name).join("loss.svg")).unwrap();
        assert!(svg.contains(&format!("{name} train")), "legend of {name}");
    }
    let out = cllm(&["plot", &d("dense"), &d("windowed"), "--out", &d("both")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(dir.path().join("both.svg")).unwrap();
    for label in [
        "dense train",
        "dense validation",
        "windowed train",
        "windowed validation",
    ] {
        assert!(svg.contains(label), "the legend has `{label}`");
    }
    for text in ["step", "learning rate", "loss"] {
        assert!(
            svg.contains(&format!(">\n{text}\n<")),
            "axis or title `{text}`"
        );
    }
    let png = std::fs::read(dir.path().join("both.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1000, 720));

    // `--log` draws the loss on a log axis, labelled with losses, not their logarithms.
    let out = cllm(&["plot", &d("dense"), "--log", "--out", &d("log")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.path().join("log.svg")).unwrap();
    assert!(log.contains("log scale"), "the axis says so");
    assert!(!svg.contains("log scale"), "a linear axis does not");
    let labels: Vec<f64> = (log.lines())
        .filter(|l| l.trim().contains('.'))
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .filter(|v| *v > 1.0 && *v < 10.0)
        .collect();
    assert!(
        labels.len() >= 3,
        "loss labels (≈ 2–6 nats), not log10s: {labels:?}"
    );

    // `--out` a folder (existing, or written with a trailing slash) puts loss.svg in it.
    std::fs::create_dir(dir.path().join("figures")).unwrap();
    for out in [d("figures"), format!("{}/", d("new"))] {
        let plotted = cllm(&["plot", &d("dense"), "--out", &out]);
        assert!(
            plotted.status.success(),
            "{}",
            String::from_utf8_lossy(&plotted.stderr)
        );
        let folder = std::path::Path::new(out.trim_end_matches('/'));
        assert!(folder.join("loss.svg").is_file() && folder.join("loss.png").is_file());
    }
}

#[test]
fn a_folder_without_metrics_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = cllm(&["plot", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("metrics.jsonl"), "{stderr}");
}

//! `cllm check`: validate specs and print them resolved.

use std::path::PathBuf;
use std::process::ExitCode;

use cllm::spec;

pub fn check(
    paths: &[PathBuf],
    resolved: bool,
    json: bool,
    overrides: &[String],
) -> miette::Result<ExitCode> {
    let mut failed = 0;
    let mut specs = Vec::new();
    for path in paths {
        match spec::load(path, overrides) {
            Ok(spec) => specs.push((path, spec)),
            Err(error) => {
                failed += 1;
                super::report(error);
            }
        }
    }
    for (path, spec) in &specs {
        if json {
            let text = serde_json::to_string_pretty(spec).expect("a Spec always serializes");
            cllm::outln!("{text}");
        } else if resolved {
            if specs.len() > 1 {
                cllm::outln!("# {}", path.display());
            }
            cllm::out!("{}", spec::to_cllm(spec, true));
            // The split as a run would cut it (a text source is tokenized to count it).
            let base_dir = path.parent().unwrap_or(std::path::Path::new("."));
            match cllm::data::Dataset::load(spec, base_dir) {
                Ok(data) => cllm::outln!("\n# data: {}", data.split()),
                Err(error) => {
                    failed += 1;
                    super::report(error);
                }
            }
        } else {
            cllm::outln!("{}: ok ({})", path.display(), summary(spec));
        }
    }
    if failed > 0 {
        // Each spec's diagnostic is printed above; this line sums them up.
        cllm::errln!("{failed} of {} spec(s) failed to check", paths.len());
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn summary(spec: &spec::Spec) -> String {
    let m = &spec.model;
    format!(
        "gpt, {} layers, width {}, {} heads, context {}, {:.2}M parameters",
        m.layers,
        m.width,
        m.heads,
        m.context,
        m.parameter_count() as f64 / 1e6
    )
}

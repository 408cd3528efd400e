//! A typed [`Spec`] → `.cllm` text. The output parses back to an equal `Spec`.

use super::types::Spec;

/// Prints every block with every key, aligned; with `docs`, each key carries its
/// one-line documentation as a trailing comment.
pub fn to_cllm(spec: &Spec, docs: bool) -> String {
    let mut out = format!("cllm {}\n", spec.version);
    for (block, entries) in spec.blocks() {
        let header = if block == "model" { "model gpt" } else { block };
        out.push_str(&format!("\n{header} {{\n"));
        let key_width = entries.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let lines: Vec<String> = entries
            .iter()
            .map(|(key, value)| format!("  {key:<key_width$} = {value}"))
            .collect();
        let line_width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let key_docs = Spec::keys(block).1;
        for (line, doc) in lines.iter().zip(key_docs) {
            if docs {
                let pad = line_width - line.chars().count();
                out.push_str(&format!("{line}{:pad$}  # {doc}\n", ""));
            } else {
                out.push_str(&format!("{line}\n"));
            }
        }
        out.push_str("}\n");
    }
    out
}

//! Any bytes given to the spec parser (as a file, and as a `--set` override) must
//! produce a `Spec` or a diagnostic, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = cllm::spec::parse(text, "fuzz", Path::new("."), &[]) {
            let _ = cllm::spec::render_plain(&error);
        }
        let _ = cllm::spec::parse("cllm 0.1\n", "fuzz", Path::new("."), &[text.to_string()]);
    }
});

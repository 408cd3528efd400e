//! Any spec text that fails to parse renders its diagnostic, with every renderer a
//! user meets (plain for logs and tests; the terminal's colour theme at a narrow and
//! a wide width), without a panic: long lines, multi-byte characters and a span at
//! the very end of the text included.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use miette::{GraphicalReportHandler, GraphicalTheme};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let attempts = [
        cllm::spec::parse(&text, "fuzz", Path::new("."), &[]),
        cllm::spec::parse("cllm 0.1\n", "fuzz", Path::new("."), &[text.to_string()]),
    ];
    for error in attempts.into_iter().filter_map(Result::err) {
        let _ = cllm::spec::render_plain(&error);
        for width in [40, 200] {
            let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode()).with_width(width);
            let mut out = String::new();
            let _ = handler.render_report(&mut out, &error);
        }
    }
});

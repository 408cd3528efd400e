//! Any bytes read as a checkpoint give a checkpoint or an error, never a panic: the
//! safetensors header and tensors, then what `cllm sample` and `--resume` read from it
//! (the stored spec, checked like a spec file; the word list).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let Ok(stored) = cllm::checkpoint::parse(path, data) else {
        return;
    };
    if let Ok(json) = stored.field(path, "spec_json")
        && let Ok(spec) = serde_json::from_str::<cllm::spec::Spec>(json)
    {
        let _ = cllm::spec::check_stored(&spec, "fuzz");
    }
    if let Some(words) = stored.metadata.get("words")
        && let Ok(words) = serde_json::from_str::<Vec<String>>(words)
    {
        let _ = cllm::data::Tokenizer::from_words(words);
    }
});

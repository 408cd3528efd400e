//! The local Hugging Face cache, read the way `huggingface_hub` lays it out, never
//! downloading: `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), else
//! `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`; a model `org/name` in `models--org--name/`, whose
//! `refs/main` holds the commit of `snapshots/COMMIT/` (files there are links into
//! `blobs/`). A revision is a ref name (`refs/REV`) or a commit.
//!
//! Only what a GPT-2 model needs is read: `config.json` (the sizes, [`HubConfig`]) and
//! `model.safetensors` (the weights, imported by `checkpoint::import_gpt2`).

use std::path::{Path, PathBuf};

/// The files a model is read from, in its snapshot folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Why a model could not be read from the cache. Each names the one command that
/// fetches what is missing.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum HubError {
    #[error("`{repo}` is not in the Hugging Face cache `{}`", cache.display())]
    #[diagnostic(
        code(cllm::hub),
        help(
            "cllm never downloads; fetch it once with `{command}` (set HF_HOME or HF_HUB_CACHE if your cache is elsewhere)"
        )
    )]
    NotCached {
        repo: String,
        cache: PathBuf,
        command: String,
    },
    #[error("`{repo}` has no revision `{revision}` in the cache (`{}`)", dir.display())]
    #[diagnostic(code(cllm::hub), help("fetch it with `{command}`"))]
    NoRevision {
        repo: String,
        revision: String,
        dir: PathBuf,
        command: String,
    },
    #[error("the cached `{repo}` has no `{file}` (in `{}`)", snapshot.display())]
    #[diagnostic(code(cllm::hub), help("fetch it with `{command}`"))]
    MissingFile {
        repo: String,
        file: &'static str,
        snapshot: PathBuf,
        command: String,
    },
    #[error("`{repo}` is not a Hugging Face model id")]
    #[diagnostic(
        code(cllm::hub),
        help("a model id is `name` or `org/name`, e.g. `gpt2` or `openai-community/gpt2`")
    )]
    BadRepo { repo: String },
    #[error("cannot read `{}`: {reason}", path.display())]
    #[diagnostic(code(cllm::hub), help("{help}"))]
    BadConfig {
        path: PathBuf,
        reason: String,
        help: String,
    },
}

/// The cache folder `huggingface_hub` uses, from the environment as it reads it.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`cache_dir`] with the variables looked up by `var`.
fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return PathBuf::from(dir);
    }
    let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache")
        });
        cache.join("huggingface")
    });
    home.join("hub")
}

/// The command that puts `repo`'s files into the cache.
pub fn download_command(repo: &str, revision: Option<&str>) -> String {
    let rev = revision.map_or(String::new(), |r| format!(" --revision {r}"));
    format!("hf download {repo} {CONFIG_FILE} {WEIGHTS_FILE}{rev}")
}

/// The snapshot folder of `repo` at `revision` (default `main`) in `cache`, holding
/// both [`CONFIG_FILE`] and [`WEIGHTS_FILE`].
pub fn locate(cache: &Path, repo: &str, revision: Option<&str>) -> Result<PathBuf, HubError> {
    let valid = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
        return Err(HubError::BadRepo { repo: repo.into() });
    }
    let command = download_command(repo, revision);
    let dir = cache.join(format!("models--{}", parts.join("--")));
    if !dir.is_dir() {
        return Err(HubError::NotCached {
            repo: repo.into(),
            cache: cache.to_path_buf(),
            command,
        });
    }
    let revision = revision.unwrap_or("main");
    let no_revision = || HubError::NoRevision {
        repo: repo.into(),
        revision: revision.into(),
        dir: dir.clone(),
        command: command.clone(),
    };
    if !valid(revision) {
        return Err(no_revision());
    }
    // A ref names a commit; anything else is taken as the commit itself, as
    // `huggingface_hub.try_to_load_from_cache` does.
    let commit = match std::fs::read_to_string(dir.join("refs").join(revision)) {
        Ok(text) => text.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    if !valid(&commit) {
        return Err(no_revision());
    }
    let snapshot = dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(no_revision());
    }
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        if !snapshot.join(file).is_file() {
            return Err(HubError::MissingFile {
                repo: repo.into(),
                file,
                snapshot,
                command,
            });
        }
    }
    Ok(snapshot)
}

/// A GPT-2 `config.json`'s sizes (`GPT2Config`'s names and defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct HubConfig {
    pub vocab_size: u64,
    pub n_positions: u64,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    /// The MLP's hidden width; `None` is 4 · n_embd.
    pub n_inner: Option<u64>,
    pub layer_norm_epsilon: f64,
    pub tie_word_embeddings: bool,
}

/// The largest `config.json` read (GPT-2's is under 1 KiB).
const CONFIG_LIMIT: u64 = 1 << 20;

/// Reads `snapshot`'s `config.json`; a model that is not GPT-2-shaped is refused.
pub fn read_config(snapshot: &Path) -> Result<HubConfig, HubError> {
    let path = snapshot.join(CONFIG_FILE);
    let bad = |reason: String, help: &str| HubError::BadConfig {
        path: path.clone(),
        reason,
        help: help.to_string(),
    };
    let bytes = crate::files::read_regular(&path, CONFIG_LIMIT)
        .map_err(|e| bad(e.to_string(), "fetch the model again"))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not JSON: {e}"), "fetch the model again"))?;
    let model_type = json["model_type"].as_str().unwrap_or("(none)");
    if model_type != "gpt2" {
        return Err(bad(
            format!("its `model_type` is `{model_type}`, not `gpt2`"),
            "cllm trains GPT-2-shaped models; use a GPT-2 checkpoint (gpt2, distilgpt2, gpt2-medium, …)",
        ));
    }
    let size = |key: &str, default: Option<u64>| match json.get(key) {
        Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            bad(
                format!("`{key}` is {v}, not a positive integer"),
                "fix the file",
            )
        }),
        None => default.ok_or_else(|| bad(format!("it has no `{key}`"), "fix the file")),
    };
    // GPT2Config's defaults, for keys a file may leave out.
    Ok(HubConfig {
        vocab_size: size("vocab_size", Some(50257))?,
        n_positions: size("n_positions", Some(1024))?,
        n_embd: size("n_embd", Some(768))?,
        n_layer: size("n_layer", Some(12))?,
        n_head: size("n_head", Some(12))?,
        n_inner: match json.get("n_inner") {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => Some(size("n_inner", None)?),
        },
        layer_norm_epsilon: json["layer_norm_epsilon"].as_f64().unwrap_or(1e-5),
        tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache laid out as `hf download` leaves it: blobs, a ref, snapshot links.
    fn cache_with(repo_dir: &str, commit: &str, config: &str) -> tempfile::TempDir {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join(repo_dir);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::create_dir_all(dir.join("snapshots").join(commit)).unwrap();
        std::fs::write(dir.join("refs/main"), commit).unwrap();
        for (file, text) in [(CONFIG_FILE, config), (WEIGHTS_FILE, "weights")] {
            let blob = format!("blob-{file}");
            std::fs::write(dir.join("blobs").join(&blob), text).unwrap();
            std::os::unix::fs::symlink(
                format!("../../blobs/{blob}"),
                dir.join("snapshots").join(commit).join(file),
            )
            .unwrap();
        }
        cache
    }

    #[test]
    fn a_model_is_found_through_its_ref_or_commit() {
        let cache = cache_with("models--org--tiny", "abc123", r#"{"model_type": "gpt2"}"#);
        let snapshot = locate(cache.path(), "org/tiny", None).unwrap();
        assert!(snapshot.ends_with("models--org--tiny/snapshots/abc123"));
        assert_eq!(
            locate(cache.path(), "org/tiny", Some("abc123")).unwrap(),
            snapshot
        );
        let config = read_config(&snapshot).unwrap();
        assert_eq!(
            (config.n_embd, config.n_inner, config.vocab_size),
            (768, None, 50257)
        );
        assert!(matches!(
            locate(cache.path(), "org/other", None),
            Err(HubError::NotCached { command, .. }) if command == "hf download org/other config.json model.safetensors"
        ));
        assert!(matches!(
            locate(cache.path(), "org/tiny", Some("v2")),
            Err(HubError::NoRevision { .. })
        ));
        for bad in ["../x", "a/b/c", "", "org/..", "a b"] {
            assert!(
                matches!(
                    locate(cache.path(), bad, None),
                    Err(HubError::BadRepo { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_model_that_is_not_gpt2_is_refused() {
        let cache = cache_with("models--meta--llama", "c0", r#"{"model_type": "llama"}"#);
        let snapshot = locate(cache.path(), "meta/llama", None).unwrap();
        let err = read_config(&snapshot).unwrap_err().to_string();
        assert!(err.contains("`model_type` is `llama`"), "{err}");
    }

    #[test]
    fn the_cache_follows_huggingface_hubs_variables() {
        let with = |set: &[(&str, &str)]| {
            let set: Vec<(String, String)> = set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            cache_dir_from(move |name| set.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
        };
        assert_eq!(
            with(&[("HOME", "/u")]),
            PathBuf::from("/u/.cache/huggingface/hub")
        );
        let xdg = [("HOME", "/u"), ("XDG_CACHE_HOME", "/x")];
        assert_eq!(with(&xdg), PathBuf::from("/x/huggingface/hub"));
        let hf_home = [
            ("XDG_CACHE_HOME", "/x"),
            ("HF_HOME", "/h"),
            ("HF_HUB_CACHE", ""),
        ];
        assert_eq!(with(&hf_home), PathBuf::from("/h/hub"));
        let legacy = [("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/l")];
        assert_eq!(with(&legacy), PathBuf::from("/l"));
        let hub = [("HF_HUB_CACHE", "/c"), ("HUGGINGFACE_HUB_CACHE", "/l")];
        assert_eq!(with(&hub), PathBuf::from("/c"));
    }
}

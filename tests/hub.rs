//! `model.weights = hf("org/name")`: a model read from the local Hugging Face cache,
//! laid out here exactly as `huggingface_hub` lays it out (blobs named by hash,
//! `refs/main`, snapshot links), never downloaded; its `config.json` fills the sizes a
//! spec leaves out, and a size the spec gives must agree.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{checkpoint_bits, cllm};

const REPO: &str = "test-org/tiny-gpt2";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The tiny model's sizes, written out.
const SIZES: &str = "vocab = gpt2  context = 4 tokens  width = 8  layers = 1  heads = 2";

fn data() -> String {
    let specs = std::fs::canonicalize("specs").unwrap();
    format!("{}/data/tinyshakespeare.txt", specs.display())
}

/// A spec training the tiny model 2 steps from `weights` (`extra` in the model block).
fn spec(dir: &Path, name: &str, model: &str) -> PathBuf {
    let file = dir.join(format!("{name}.cllm"));
    let text = format!(
        "cllm 0.1\ndata {{ source = text(\"{}\") }}\nmodel gpt {{ {model} }}\n\
         train {{ batch = 1 seqs  steps = 2 }}\nplan {{ threads = 1 }}\n",
        data()
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Runs cllm with `HF_HOME` = `home` (and no other cache variable).
fn cllm_with_cache(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cllm"))
        .args(args)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .stdin(Stdio::null())
        .output()
        .expect("cllm runs")
}

/// Trains and exports the tiny model, then files its export into `home`'s cache as
/// `hf download REPO` would: each file a blob named by its SHA-256, linked from the
/// snapshot of COMMIT, which `refs/main` names. Returns the exported folder.
fn cached_model(dir: &Path, home: &Path) -> PathBuf {
    let run = dir.join("source-run");
    let source = spec(dir, "source", SIZES);
    let out = cllm(&[
        "run",
        source.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = dir.join("export");
    let out = cllm(&[
        "export",
        run.to_str().unwrap(),
        "--hf",
        export.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let repo = home.join("hub/models--test-org--tiny-gpt2");
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for file in ["config.json", "model.safetensors"] {
        let bytes = std::fs::read(export.join(file)).unwrap();
        let blob = sha256_hex(&bytes);
        std::fs::write(repo.join("blobs").join(&blob), bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snapshot.join(file)).unwrap();
    }
    export
}

/// Whether `haystack` has `needle`, whitespace and the diagnostic's margin aside (a
/// diagnostic wraps its lines at the terminal's width).
fn says(haystack: &str, needle: &str) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != '│')
            .collect()
    };
    squash(haystack).contains(&squash(needle))
}

/// The blob name `huggingface_hub` gives a file (its SHA-256, as `sha256sum` prints).
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn a_cached_model_gives_the_weights_and_the_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf-home");
    let export = cached_model(dir.path(), &home);

    // Sizes from config.json: the spec names the model and nothing else.
    let from_hub = spec(dir.path(), "from_hub", &format!("weights = hf(\"{REPO}\")"));
    let resolved = cllm_with_cache(&home, &["check", from_hub.to_str().unwrap(), "--resolved"]);
    let text = String::from_utf8_lossy(&resolved.stdout);
    assert!(
        resolved.status.success(),
        "{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    for line in [
        "vocab = gpt2",
        "context = 4",
        "width = 8",
        "layers = 1",
        "heads = 2",
        "mlp = 4",
    ] {
        assert!(says(&text, line), "`{line}` missing from\n{text}");
    }
    assert!(says(&text, &format!("weights = hf(\"{REPO}\")")), "{text}");

    // The same training as from the exported file named by its path, bit for bit.
    let hub_run = dir.path().join("hub-run");
    let out = cllm_with_cache(
        &home,
        &[
            "run",
            from_hub.to_str().unwrap(),
            "--out",
            hub_run.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(
        says(
            &header,
            &format!("weights: hf(\"{REPO}\") from the Hugging Face cache")
        ),
        "{header}"
    );
    let weights = export.join("model.safetensors");
    let from_file = spec(
        dir.path(),
        "from_file",
        &format!("{SIZES}  weights = \"{}\"", weights.display()),
    );
    let file_run = dir.path().join("file-run");
    let out = cllm(&[
        "run",
        from_file.to_str().unwrap(),
        "--out",
        file_run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(checkpoint_bits(&hub_run), checkpoint_bits(&file_run));

    // A pinned commit, and a shorter context (the position table is cut).
    let pinned = spec(
        dir.path(),
        "pinned",
        &format!("weights = hf(\"{REPO}\", revision = \"{COMMIT}\")  context = 2 tokens"),
    );
    let out = cllm_with_cache(&home, &["check", pinned.to_str().unwrap(), "--resolved"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(says(&String::from_utf8_lossy(&out.stdout), "context = 2"));
}

#[test]
fn a_size_that_disagrees_or_a_missing_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf-home");
    cached_model(dir.path(), &home);

    let wider = spec(
        dir.path(),
        "wider",
        &format!("weights = hf(\"{REPO}\")  width = 16"),
    );
    let out = cllm_with_cache(&home, &["check", wider.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        says(
            &stderr,
            "`model.width = 16`, but `test-org/tiny-gpt2`'s config.json says n_embd = 8"
        ),
        "{stderr}"
    );
    assert!(says(&stderr, "remove `width`"), "{stderr}");

    let longer = spec(
        dir.path(),
        "longer",
        &format!("weights = hf(\"{REPO}\")  context = 8"),
    );
    let out = cllm_with_cache(&home, &["check", longer.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(says(&stderr, "n_positions = 4"), "{stderr}");

    // Never downloaded: the one command that fetches it.
    let absent = spec(
        dir.path(),
        "absent",
        "weights = hf(\"openai-community/gpt2\")",
    );
    let out = cllm_with_cache(&home, &["run", absent.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        says(
            &stderr,
            "hf download openai-community/gpt2 config.json model.safetensors"
        ),
        "{stderr}"
    );
    assert!(
        says(&stderr, "is not in the Hugging Face cache"),
        "{stderr}"
    );

    let revision = spec(
        dir.path(),
        "rev",
        &format!("weights = hf(\"{REPO}\", revision = \"v2\")"),
    );
    let out = cllm_with_cache(&home, &["check", revision.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(says(&stderr, "--revision v2"), "{stderr}");
}

//! Every spec under specs/ parses, validates, and prints back to the same `Spec`;
//! its resolved form (every default filled in) is snapshotted as typed YAML.

use std::path::Path;

use cllm::spec;

#[test]
fn every_spec_resolves_to_its_snapshot() {
    insta::glob!("../specs", "*.cllm", |path| {
        let resolved = spec::load(path, &[]).unwrap_or_else(|e| {
            panic!(
                "{} does not check:\n{}",
                path.display(),
                spec::render_plain(&e)
            )
        });
        insta::assert_yaml_snapshot!(resolved);
    });
}

#[test]
fn every_spec_prints_back_to_itself() {
    insta::glob!("../specs", "*.cllm", |path| {
        let original = spec::load(path, &[]).expect("spec checks");
        for docs in [false, true] {
            let text = spec::to_cllm(&original, docs);
            let base = path.parent().unwrap();
            let reparsed = spec::parse(&text, "printed", base, &[]).unwrap_or_else(|e| {
                panic!("printed spec does not parse:\n{}", spec::render_plain(&e))
            });
            assert_eq!(
                reparsed,
                original,
                "print → parse changed {}",
                path.display()
            );
        }
    });
}

#[test]
fn the_empty_spec_is_the_default_spec() {
    let parsed = spec::parse("cllm 0.1\n", "empty", Path::new("."), &[]).expect("empty spec");
    let mut expected = spec::Spec::default();
    // Derived defaults: min_lr = lr / 10 and shards = min(8, micro-batch).
    expected.train.schedule = expected
        .train
        .schedule
        .resolve(expected.train.optimizer.lr());
    expected.plan.shards = 8;
    assert_eq!(parsed, expected);
}

#[test]
fn overrides_win_over_the_file() {
    let overrides = [
        "train.steps=100".to_string(),
        "model.attention=window(8)".to_string(),
        "plan.memory_budget=512 MiB".to_string(),
    ];
    let spec = spec::load(Path::new("specs/add.cllm"), &overrides).expect("overrides apply");
    assert_eq!(spec.train.steps, 100);
    assert_eq!(spec.model.attention, spec::Attention::Window { window: 8 });
    assert_eq!(spec.plan.memory_budget, 512 << 20);
}

#[test]
fn units_and_suffixes_scale_numbers() {
    let text = "cllm 0.1\ntrain { steps = 3k  batch = 1_024 seqs }\n\
                data { val_split = 5% }\nplan { memory_budget = 1.5 GiB shards = 8 }";
    let spec = spec::parse(text, "units", Path::new("."), &[]).expect("parses");
    assert_eq!(spec.train.steps, 3000);
    assert_eq!(spec.train.batch, 1024);
    assert_eq!(spec.data.val_split, 0.05);
    assert_eq!(spec.plan.memory_budget, 3 << 29);
}

#[test]
fn min_lr_defaults_to_a_tenth_of_lr() {
    let text = "cllm 0.1\ntrain { optimizer = adamw(lr = 2e-3) }";
    let spec = spec::parse(text, "min_lr", Path::new("."), &[]).expect("parses");
    assert_eq!(
        spec.train.schedule,
        spec::Schedule::Cosine {
            warmup: 100,
            min_lr: Some(2e-4)
        }
    );
}

//! What may change when a run is resumed. A resumed run must be a continuation: the
//! same model, data, optimizer, schedule and arithmetic. Keys that only say how often to
//! log, evaluate, sample or save, or how many threads run (the numbers never depend on
//! it), may change; `train.steps` may change only under a constant schedule, whose
//! learning rate at a step does not depend on the run's length.

use super::run_choices::Schedule;
use super::types::Spec;

/// Keys that may differ between a run and its resumption.
pub const SAFE_ON_RESUME: [&str; 11] = [
    "train.log_every",
    "eval.every",
    "eval.batches",
    "sample.prompt",
    "sample.tokens",
    "sample.temperature",
    "sample.top_k",
    "sample.top_p",
    "sample.seed",
    "checkpoint.every",
    "plan.threads",
];

/// One key a resumption would change: `block.key`, the run's value, the new value
/// (as JSON, for the message).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub key: String,
    pub was: String,
    pub now: String,
}

/// The keys (besides [`SAFE_ON_RESUME`]) whose values differ between the spec a run was
/// started with (`stored`) and the one it would be resumed with (`now`), in block order.
pub fn resume_changes(stored: &Spec, now: &Spec) -> Vec<Change> {
    let as_json = |spec: &Spec| serde_json::to_value(spec).expect("a Spec serializes");
    let (was, is) = (as_json(stored), as_json(now));
    let constant = |spec: &Spec| matches!(spec.train.schedule, Schedule::Constant { .. });
    let mut changes = Vec::new();
    let (Some(was), Some(is)) = (was.as_object(), is.as_object()) else {
        unreachable!("a Spec serializes to an object");
    };
    for (block, old) in was {
        let new = &is[block];
        let fields = old.as_object().into_iter().flatten();
        for (field, old_value) in fields {
            let new_value = &new[field];
            let key = format!("{block}.{field}");
            let safe = SAFE_ON_RESUME.contains(&key.as_str())
                || (key == "train.steps" && constant(stored) && constant(now));
            if old_value != new_value && !safe {
                changes.push(Change {
                    key,
                    was: old_value.to_string(),
                    now: new_value.to_string(),
                });
            }
        }
        if !old.is_object() && old != new {
            changes.push(Change {
                key: block.clone(),
                was: old.to_string(),
                now: new.to_string(),
            });
        }
    }
    changes
}

//! The subcommands' bodies. Each turns library errors into a rendered diagnostic
//! on stderr and an exit code: 0 success, 1 a user error, 130 interrupted.

pub mod bench;
pub mod check;
pub mod eval;
pub mod export;
pub mod ir;
pub mod plan;
pub mod plot;
pub mod prepare;
pub mod run;
pub mod sample;
pub mod scaling;
pub mod stages;
mod stored;

/// Prints a diagnostic the way every subcommand does.
pub fn report(error: impl miette::Diagnostic + Send + Sync + 'static) {
    cllm::errln!("{:?}", miette::Report::new(error));
}

/// Refuses a `RAYON_NUM_THREADS` above what `plan.threads` accepts: rayon's global
/// pool (tokenizing, loading, sampling) would start that many OS threads, and 100 000
/// spun for minutes before the process aborted. (0 or a non-number: rayon's default.)
pub fn rayon_threads_request() -> Result<(), String> {
    let max = cllm::spec::MAX_THREADS;
    match std::env::var("RAYON_NUM_THREADS").map(|v| v.trim().parse::<u64>()) {
        Ok(Ok(n)) if n > max => Err(format!(
            "RAYON_NUM_THREADS={n}: cllm runs at most {max} threads (each is an OS thread); \
             unset it, or give at most {max} (`plan.threads` sets a run's own)"
        )),
        _ => Ok(()),
    }
}

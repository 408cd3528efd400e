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

//! `cllm ir`: the Cranelift IR of every kernel the plan compiles to.

use std::path::PathBuf;
use std::process::ExitCode;

use cllm::{codegen, plan, spec};

#[derive(clap::Args)]
pub struct IrArgs {
    /// The spec to compile.
    spec: PathBuf,
    /// Only kernels whose name contains this (e.g. `attention`, `adamw`).
    #[arg(long, value_name = "NAME")]
    kernel: Option<String>,
    /// Also write each shown kernel's machine code to DIR/NNN_name.bin, for
    /// `objdump -D -b binary -mi386:x86-64 DIR/NNN_name.bin`.
    #[arg(long, value_name = "DIR")]
    code: Option<PathBuf>,
    /// Override a key (repeatable).
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn ir(args: IrArgs) -> ExitCode {
    let spec = match spec::load(&args.spec, &args.overrides) {
        Ok(spec) => spec,
        Err(error) => {
            super::report(error);
            return ExitCode::FAILURE;
        }
    };
    let plan = match plan::plan(&spec) {
        Ok(plan) => plan,
        Err(error) => {
            super::report(error);
            return ExitCode::FAILURE;
        }
    };
    let program = match codegen::compile(
        &plan,
        codegen::Checks {
            verify: true,
            optimize: true,
        },
    ) {
        Ok(program) => program,
        Err(error) => {
            eprintln!("cllm ir: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut shown = 0;
    for (index, (name, ir)) in program.ir().iter().enumerate() {
        if args
            .kernel
            .as_ref()
            .is_some_and(|wanted| !name.contains(wanted.as_str()))
        {
            continue;
        }
        let ms = 1e3 * program.kernel_seconds()[index];
        println!("; kernel {index}: {name} (compiled in {ms:.1} ms)\n{ir}");
        shown += 1;
        if let Some(dir) = &args.code {
            let path = dir.join(format!("{index:03}_{name}.bin"));
            let written = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&path, &program.machine_code()[index]));
            if let Err(error) = written {
                eprintln!("cllm ir: cannot write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if shown == 0 {
        let names: Vec<&str> = program.ir().iter().map(|(n, _)| n.as_str()).collect();
        eprintln!(
            "cllm ir: no kernel matches; the kernels are: {}",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    }
    eprintln!(
        "{shown} kernel(s); compiled in {:.0} ms",
        1e3 * program.compile_seconds
    );
    ExitCode::SUCCESS
}

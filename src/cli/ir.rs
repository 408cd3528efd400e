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

pub fn ir(args: IrArgs) -> miette::Result<ExitCode> {
    let spec = spec::load(&args.spec, &args.overrides)?;
    let plan = plan::plan(&spec)?;
    let checks = codegen::Checks {
        verify: true,
        optimize: true,
    };
    let program =
        codegen::compile(&plan, checks).map_err(|error| miette::miette!("cllm ir: {error}"))?;
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
        cllm::outln!("; kernel {index}: {name} (compiled in {ms:.1} ms)\n{ir}");
        shown += 1;
        if let Some(dir) = &args.code {
            let path = dir.join(format!("{index:03}_{name}.bin"));
            let written = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&path, &program.machine_code()[index]));
            written.map_err(|error| {
                miette::miette!("cllm ir: cannot write {}: {error}", path.display())
            })?;
        }
    }
    if shown == 0 {
        let names: Vec<&str> = program.ir().iter().map(|(n, _)| n.as_str()).collect();
        miette::bail!(
            "cllm ir: no kernel matches; the kernels are: {}",
            names.join(", ")
        );
    }
    cllm::errln!(
        "{shown} kernel(s); compiled in {:.0} ms",
        1e3 * program.compile_seconds
    );
    Ok(ExitCode::SUCCESS)
}

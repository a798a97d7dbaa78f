//! The `jobctl` binary: parse, run, and turn any failure into one `error:` line.

use std::process::ExitCode;

fn main() -> ExitCode {
    // `jobctl dev` hosts borglets, whose per-attempt shims re-run this executable.
    if let Some(code) = borglet::shim::main_if_shim() {
        return code;
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `jobctl component ...` (how `jobctl dev` starts its children) is parsed on its
    // own so that jobctl's global flags never swallow the component's arguments.
    let result = match jobctl::cmd::component::parse_argv(&argv) {
        Some(Ok(args)) => jobctl::cmd::component::run(args),
        Some(Err(e)) => return usage(e),
        None => match <jobctl::Cli as clap::Parser>::try_parse_from(&argv) {
            Ok(cli) => jobctl::run(cli),
            Err(e) => return usage(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`jobctl ... | head`): nothing left to say to anyone.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", jobctl::output::error_line(&e));
            ExitCode::from(jobctl::exit::code(&e))
        }
    }
}

/// Help and version go to stdout and succeed; usage errors exit 2.
fn usage(e: clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(e.exit_code().clamp(0, 255) as u8)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

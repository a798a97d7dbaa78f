fn main() -> std::process::ExitCode {
    match borglet::run_cli(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borglet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

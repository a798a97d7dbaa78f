fn main() -> std::process::ExitCode {
    match borgmaster::run_cli(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borgmaster: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

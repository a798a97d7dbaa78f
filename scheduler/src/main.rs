fn main() -> std::process::ExitCode {
    match borgscheduler::run_cli(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borgscheduler: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

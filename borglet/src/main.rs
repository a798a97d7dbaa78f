fn main() -> std::process::ExitCode {
    if let Some(code) = borglet::shim::main_if_shim() {
        return code;
    }
    match borglet::run_cli(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borglet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Replays a workload trace through the placement core in simulated time: see
//! `borgscheduler::replay`.

fn main() -> std::process::ExitCode {
    match borgscheduler::replay::run_cli(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borg-replay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The per-attempt shim alone (`borglet::shim`): a smaller executable than the
//! borglet, so one per task costs less to start (`--shim-exe PATH`). Not the
//! default: a shim must come from the same build as its borglet, which the
//! borglet's own executable always is.

fn main() -> std::process::ExitCode {
    borglet::shim::main_if_shim().unwrap_or_else(|| {
        eprintln!("usage: borglet-shim {} SANDBOX", borglet::shim::SHIM_ARG);
        std::process::ExitCode::from(2)
    })
}

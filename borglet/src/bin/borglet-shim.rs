//! The shim spawner and per-attempt shim alone (`borglet::spawner`,
//! `borglet::shim`): a smaller executable than the borglet (`--shim-exe PATH`).
//! Not the default: a shim must come from the same build as its borglet, which
//! the borglet's own executable always is; and the spawner is started once per
//! borglet, its shims forked from it, so the executable's size costs little.

fn main() -> std::process::ExitCode {
    borglet::shim::main_if_shim().unwrap_or_else(|| {
        eprintln!(
            "usage: borglet-shim {} | {} SANDBOX",
            borglet::spawner::SPAWNER_ARG,
            borglet::shim::SHIM_ARG
        );
        std::process::ExitCode::from(2)
    })
}

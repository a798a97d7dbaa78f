//! The borglet's keeper alone (`borglet::keeper`): a smaller executable than
//! the borglet (`--shim-exe PATH`). Not the default: the keeper must come from
//! the same build as its borglet, which the borglet's own executable always is;
//! and it is started once per borglet, so the executable's size costs little.

fn main() -> std::process::ExitCode {
    borglet::shim::main_if_shim().unwrap_or_else(|| {
        eprintln!(
            "usage: borglet-shim {} DATA_DIR",
            borglet::keeper::KEEPER_ARG
        );
        std::process::ExitCode::from(2)
    })
}

//! The entry every binary that can run a borglet calls first thing in `main`:
//! with argv\[1\] = `__borglet-keeper` it runs as the borglet's keeper
//! (`crate::keeper`) instead.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// Run as the keeper if argv says so (returns the exit code); `None` otherwise.
pub fn main_if_shim() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first: Option<OsString> = args.next();
    let code = match first.as_deref().and_then(|a| a.to_str()) {
        Some(crate::keeper::KEEPER_ARG) => match args.next() {
            Some(dir) => crate::keeper::serve(Path::new(&dir)),
            None => {
                eprintln!("usage: {} DATA_DIR", crate::keeper::KEEPER_ARG);
                2
            }
        },
        _ => return None,
    };
    Some(ExitCode::from(code.clamp(0, 255) as u8))
}

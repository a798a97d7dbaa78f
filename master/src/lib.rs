//! borgmaster (skeleton: being built).

use std::ffi::OsString;

/// Parse `args` (argv, including the program name) and run until SIGINT/SIGTERM.
/// The `borgmaster` binary and `jobctl dev` both enter here.
pub fn run_cli<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let _ = args.into_iter().count();
    anyhow::bail!("borgmaster is not built yet")
}

//! `jobctl component NAME [ARGS...]` (hidden): run one component of the cell in
//! this process. `jobctl dev` starts its children this way, so a single binary
//! is the whole cell. Each component builds its own runtime and returns on
//! SIGINT/SIGTERM, so this path must never run inside a tokio runtime.

use std::ffi::OsString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    Borgmaster,
    Borgscheduler,
    Borglet,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Borgmaster => "borgmaster",
            Component::Borgscheduler => "borgscheduler",
            Component::Borglet => "borglet",
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    pub component: Component,
    /// Passed to the component unchanged (its own `--help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// `jobctl component ...` parsed on its own, without jobctl's global flags:
/// everything after the component's name belongs to the component, even
/// `--master`, `--help` or `--version`. `None` when argv is another command.
pub fn parse_argv(argv: &[OsString]) -> Option<Result<Args, clap::Error>> {
    if argv.get(1).map(|a| a.as_os_str()) != Some("component".as_ref()) {
        return None;
    }
    #[derive(Debug, clap::Parser)]
    #[command(
        name = "jobctl component",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    struct Standalone {
        #[command(flatten)]
        args: Args,
    }
    use clap::Parser;
    Some(Standalone::try_parse_from(&argv[1..]).map(|s| s.args))
}

/// The argv the component's `run_cli` sees: its name, then the arguments.
pub fn argv(args: &Args) -> Vec<OsString> {
    std::iter::once(OsString::from(args.component.name()))
        .chain(args.args.iter().cloned())
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    name_process();
    let argv = argv(&args);
    match args.component {
        Component::Borgmaster => borgmaster::run_cli(argv),
        Component::Borgscheduler => borgscheduler::run_cli(argv),
        Component::Borglet => borglet::run_cli(argv),
    }
}

/// `jobctl dev` sets argv[0] (`borglet-2`); make the kernel's process name match
/// so `ps -e` and `top` show it too, not just `ps -f`.
fn name_process() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let Some(base) = std::path::Path::new(&arg0).file_name() else {
        return;
    };
    let mut bytes = base.as_encoded_bytes().to_vec();
    // The kernel keeps 15 bytes and a NUL.
    bytes.truncate(15);
    if let Ok(name) = std::ffi::CString::new(bytes) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn component_args_pass_through_untouched() {
        let cli = Cli::try_parse_from([
            "jobctl",
            "component",
            "borglet",
            "--listen",
            "127.0.0.1:7701",
            "--master",
            "http://127.0.0.1:7700",
            "--help",
        ])
        .unwrap();
        let Command::Component(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let argv: Vec<String> = super::argv(&args)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            argv,
            [
                "borglet",
                "--listen",
                "127.0.0.1:7701",
                "--master",
                "http://127.0.0.1:7700",
                "--help"
            ]
        );
    }

    #[test]
    fn a_leading_global_looking_flag_still_goes_to_the_component() {
        let argv: Vec<std::ffi::OsString> = [
            "borglet-1",
            "component",
            "borglet",
            "--master",
            "x",
            "--version",
        ]
        .map(Into::into)
        .to_vec();
        let args = super::parse_argv(&argv).unwrap().unwrap();
        assert_eq!(args.component, super::Component::Borglet);
        assert_eq!(args.args, ["--master", "x", "--version"]);

        let other: Vec<std::ffi::OsString> = ["jobctl", "get", "jobs"].map(Into::into).to_vec();
        assert!(super::parse_argv(&other).is_none());
        let bad: Vec<std::ffi::OsString> = ["jobctl", "component", "nope"].map(Into::into).to_vec();
        assert!(super::parse_argv(&bad).unwrap().is_err());
    }
}

//! jobctl: the command-line tool of a borg cell. Submits and inspects jobs over
//! the master's REST API, and `jobctl dev` runs a whole local cell (Postgres,
//! master, scheduler, borglets) in the foreground.
//!
//! `main` stays thin: it parses [`Cli`] and calls [`run`]; every command lives in
//! its own file under `cmd/`, the HTTP calls in `client`, the rendering in `output`.

pub mod client;
pub mod cmd;
pub mod credentials;
pub mod dev;
pub mod events;
pub mod exit;
pub mod follow;
pub mod output;
pub mod spec_file;
pub mod watch;

use clap::{Parser, Subcommand};

pub const DEFAULT_MASTER: &str = "http://127.0.0.1:7700";

#[derive(Debug, Parser)]
#[command(
    name = "jobctl",
    version,
    about = "Submit and inspect jobs on a borg cell, or run a local dev cell",
    propagate_version = true
)]
pub struct Cli {
    /// Base URL of the borgmaster API, or several comma-separated (tried in
    /// turn while one is unreachable or answers 503) [default: the dev cell's
    /// started in this directory or one above, else http://127.0.0.1:7700].
    /// `jobctl bench` uses this cell instead of starting its own.
    #[arg(long, global = true, env = "BORG_MASTER", value_name = "URL[,URL...]")]
    pub master: Option<String>,

    /// The cluster CA (PEM) an https master's certificate must chain to
    /// [default: the CA of a `jobctl dev --tls` cell started in this directory
    /// or one above, else the system's roots].
    #[arg(long, global = true, env = "BORG_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// Bearer token for the API [default: ~/.config/borg/token, else the
    /// admin.token of a dev cell started in this directory or one above].
    #[arg(long, global = true, env = "BORG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a job from a YAML or JSON spec file.
    Run(cmd::run::Args),
    /// List jobs, a job's tasks, or machines.
    Get(cmd::get::Args),
    /// Show a job in detail: its spec, tasks and recent events.
    Describe(cmd::describe::Args),
    /// Print a task's output.
    Logs(cmd::logs::Args),
    /// Kill a job: stop all its tasks.
    Kill(cmd::kill::Args),
    /// Dry run: would the master take this spec, what would change, where
    /// would its tasks go now (or why wait, whom preempt). Writes nothing.
    Plan(cmd::plan::Args),
    /// Where a job's running tasks are: machine, host and ports.
    Resolve(cmd::resolve::Args),
    /// Wait until a job ends; exit 0 if it succeeded, 1 if it failed or was killed.
    Wait(cmd::wait::Args),
    /// Print a shell completion script (bash, zsh or fish).
    Completion(cmd::completion::Args),
    /// Print jobctl's version and the master's.
    Version(cmd::version::Args),
    /// Set a service's replica count (down stops the highest indexes first).
    Scale(cmd::scale::Args),
    /// Submit a job, or update a live one to this spec (a new version rolls out;
    /// a new replica count alone scales), as `kubectl apply`.
    #[command(visible_alias = "update")]
    Apply(cmd::apply::Args),
    /// A job's rolling update: status, pause, resume, undo.
    Rollout(cmd::rollout::Args),
    /// Drain a machine: place nothing new there and move its tasks elsewhere.
    Drain(cmd::cordon::Args),
    /// Put a drained machine back into service.
    Uncordon(cmd::cordon::Args),
    /// What is used now: cpu and memory by job and by machine, biggest first.
    Top(cmd::top::Args),
    /// Read or set an owner's quota per priority band.
    Quota(cmd::quota::Args),
    /// Make, list or revoke API tokens (admins).
    Token(cmd::token::Args),
    /// Run a whole local cell in the foreground: Postgres, master, scheduler and borglets.
    Dev(dev::Args),
    /// Benchmark a cell end to end: latency, throughput and CPU per task.
    Bench(cmd::bench::Args),
    /// Run one component (used by `jobctl dev` for its children).
    #[command(hide = true)]
    Component(cmd::component::Args),
}

/// Run a parsed command line. The component and dev paths manage their own
/// runtimes (a component builds its own and must not be nested in ours); every
/// other command is a short-lived client on a current-thread runtime.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        master,
        ca_cert,
        token,
        command,
    } = cli;
    // `dev` makes its own token and a component needs none.
    let (token, url, ca) = match &command {
        Command::Dev(_) | Command::Component(_) | Command::Completion(_) => {
            (None, DEFAULT_MASTER.to_string(), None)
        }
        _ => (
            credentials::resolve(token),
            credentials::master(master.clone()),
            credentials::ca_cert(ca_cert),
        ),
    };
    let client = || client::Client::with_ca(&url, token.clone(), ca.as_deref());
    match command {
        Command::Component(args) => cmd::component::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Bench(args) => cmd::bench::run(args, master, token),
        Command::Run(args) => block_on(async { cmd::run::run(&client()?, args).await }),
        Command::Get(args) => block_on(async { cmd::get::run(&client()?, args).await }),
        Command::Describe(args) => block_on(async { cmd::describe::run(&client()?, args).await }),
        Command::Logs(args) => block_on(async { cmd::logs::run(&client()?, args).await }),
        Command::Kill(args) => block_on(async { cmd::kill::run(&client()?, args).await }),
        Command::Plan(args) => block_on(async { cmd::plan::run(&client()?, args).await }),
        Command::Resolve(args) => block_on(async { cmd::resolve::run(&client()?, args).await }),
        Command::Wait(args) => block_on(async { cmd::wait::run(&client()?, args).await }),
        Command::Completion(args) => cmd::completion::run(args),
        Command::Version(args) => block_on(async { cmd::version::run(&client()?, args).await }),
        Command::Scale(args) => block_on(async { cmd::scale::run(&client()?, args).await }),
        Command::Apply(args) => block_on(async { cmd::apply::run(&client()?, args).await }),
        Command::Rollout(args) => block_on(async { cmd::rollout::run(&client()?, args).await }),
        Command::Drain(args) => block_on(async { cmd::cordon::drain(&client()?, args).await }),
        Command::Uncordon(args) => {
            block_on(async { cmd::cordon::uncordon(&client()?, args).await })
        }
        Command::Top(args) => block_on(async { cmd::top::run(&client()?, args).await }),
        Command::Quota(args) => block_on(async { cmd::quota::run(&client()?, args).await }),
        Command::Token(args) => block_on(async { cmd::token::run(&client()?, args).await }),
    }
}

fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn master_defaults_and_can_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["jobctl", "get", "jobs"]).unwrap();
        // BORG_MASTER may be set in the environment running the tests.
        if std::env::var_os("BORG_MASTER").is_none() {
            assert_eq!(cli.master, None);
        }
        let cli = Cli::try_parse_from(["jobctl", "get", "jobs", "--master", "http://h:1"]).unwrap();
        assert_eq!(cli.master.as_deref(), Some("http://h:1"));
    }

    #[test]
    fn unknown_command_is_a_usage_error() {
        let err = Cli::try_parse_from(["jobctl", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}

//! `jobctl get jobs|tasks JOB|machines`: lists, as a table or as JSON.

use crate::client::Client;
use crate::output::{self, emit, Format};
use chrono::Utc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value_t,
        global = true
    )]
    pub output: Format,
    /// Keep watching: print each change as it happens (driven by the master's
    /// event stream) until interrupted.
    #[arg(short = 'w', long, global = true)]
    pub watch: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Every job, with its task counts.
    #[command(visible_alias = "job")]
    Jobs,
    /// The tasks of one job.
    #[command(visible_alias = "task")]
    Tasks {
        /// The job's name.
        job: String,
    },
    /// Every machine, with its allocation.
    #[command(visible_alias = "machine")]
    Machines,
    /// State changes of tasks, jobs and machines, oldest first.
    #[command(visible_alias = "event")]
    Events(super::get_watch::EventArgs),
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let now = Utc::now();
    if let What::Events(events) = &args.what {
        return super::get_watch::events(client, events, args.output, args.watch).await;
    }
    if args.watch {
        return super::get_watch::watch(client, &args.what, args.output).await;
    }
    let text = match (args.what, args.output) {
        (What::Jobs, Format::Json) => output::json(&client.jobs().await?)?,
        (What::Jobs, Format::Table) => {
            let list = client.jobs().await?;
            if list.jobs.is_empty() {
                eprintln!("no jobs");
                return Ok(());
            }
            output::jobs_table(&list.jobs, now)
        }
        (What::Tasks { job }, format) => {
            let mut view = client.job_with_all_tasks(&job).await?;
            let tasks = view.tasks.take().unwrap_or_default();
            match format {
                Format::Json => output::json(&tasks)?,
                Format::Table => output::tasks_table(&view, &tasks, now),
            }
        }
        (What::Machines, Format::Json) => output::json(&client.machines().await?)?,
        (What::Machines, Format::Table) => {
            let list = client.machines().await?;
            if list.machines.is_empty() {
                eprintln!("no machines");
                return Ok(());
            }
            output::machines_table(&list.machines, now)
        }
        (What::Events(_), _) => unreachable!("handled above"),
    };
    emit(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Args {
        let cli =
            Cli::try_parse_from(std::iter::once("jobctl").chain(args.iter().copied())).unwrap();
        match cli.command {
            Command::Get(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn output_flag_goes_anywhere() {
        let a = parse(&["get", "jobs", "-o", "json"]);
        assert!(matches!(a.what, What::Jobs));
        assert_eq!(a.output, Format::Json);
        let a = parse(&["get", "-o", "json", "machines"]);
        assert!(matches!(a.what, What::Machines));
        assert_eq!(a.output, Format::Json);
        let a = parse(&["get", "task", "hello"]);
        assert!(matches!(a.what, What::Tasks { ref job } if job == "hello"));
        assert_eq!(a.output, Format::Table);
    }

    #[test]
    fn bad_format_is_a_usage_error() {
        let err = Cli::try_parse_from(["jobctl", "get", "jobs", "-o", "yaml"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["jobctl", "get", "tasks"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}

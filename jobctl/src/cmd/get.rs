//! `jobctl get jobs|tasks JOB|machines|events`: lists, as a table (`-o wide`
//! adds columns) or as JSON or YAML, filtered by `--state` and `--machine`.

use crate::client::Client;
use crate::output::{self, emit, ListFormat};
use borg_shared::wire::{JobView, MachineView, TaskView};
use borg_shared::{JobState, MachineState, TaskState};
use chrono::Utc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    /// Output format: `table`, `wide` (more columns), `json` or `yaml`.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value_t,
        global = true
    )]
    pub output: ListFormat,
    /// Keep watching: print each change as it happens (driven by the master's
    /// event stream) until interrupted.
    #[arg(short = 'w', long, global = true)]
    pub watch: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Every job, with its task counts.
    #[command(visible_alias = "job")]
    Jobs {
        /// Only jobs in these states (`--state running,pending`).
        #[arg(long, value_delimiter = ',', value_name = "STATE")]
        state: Vec<JobState>,
    },
    /// The tasks of one job.
    #[command(visible_alias = "task")]
    Tasks {
        /// The job's name.
        job: String,
        /// Only tasks in these states (`--state pending`).
        #[arg(long, value_delimiter = ',', value_name = "STATE")]
        state: Vec<TaskState>,
        /// Only tasks placed on this machine.
        #[arg(long)]
        machine: Option<String>,
    },
    /// Every machine, with its allocation.
    #[command(visible_alias = "machine")]
    Machines {
        /// Only machines in these states (`--state up,draining`).
        #[arg(long, value_delimiter = ',', value_name = "STATE")]
        state: Vec<MachineState>,
    },
    /// State changes of tasks, jobs and machines, oldest first.
    #[command(visible_alias = "event")]
    Events(super::get_watch::EventArgs),
}

/// Jobs in one of `states` (all when empty).
pub fn filter_jobs(jobs: Vec<JobView>, states: &[JobState]) -> Vec<JobView> {
    jobs.into_iter()
        .filter(|j| states.is_empty() || states.contains(&j.state))
        .collect()
}

/// Tasks in one of `states` (all when empty) and on `machine` (if given).
pub fn filter_tasks(
    tasks: Vec<TaskView>,
    states: &[TaskState],
    machine: Option<&str>,
) -> Vec<TaskView> {
    tasks
        .into_iter()
        .filter(|t| states.is_empty() || states.contains(&t.state))
        .filter(|t| machine.is_none() || t.machine.as_deref() == machine)
        .collect()
}

/// Machines in one of `states` (all when empty).
pub fn filter_machines(machines: Vec<MachineView>, states: &[MachineState]) -> Vec<MachineView> {
    machines
        .into_iter()
        .filter(|m| states.is_empty() || states.contains(&m.state))
        .collect()
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let now = Utc::now();
    if let What::Events(events) = &args.what {
        return super::get_watch::events(client, events, args.output, args.watch).await;
    }
    if args.watch {
        return super::get_watch::watch(client, &args.what, args.output).await;
    }
    let format = args.output;
    let text = match args.what {
        What::Jobs { state } => {
            let mut list = client.jobs().await?;
            list.jobs = filter_jobs(list.jobs, &state);
            if let Some(text) = output::structured(format, &list)? {
                text
            } else if list.jobs.is_empty() {
                eprintln!("no jobs");
                return Ok(());
            } else if format == ListFormat::Wide {
                output::jobs_table_wide(&list.jobs, now)
            } else {
                output::jobs_table(&list.jobs, now)
            }
        }
        What::Tasks {
            job,
            state,
            machine,
        } => {
            let mut view = client.job_with_all_tasks(&job).await?;
            let tasks = filter_tasks(
                view.tasks.take().unwrap_or_default(),
                &state,
                machine.as_deref(),
            );
            if let Some(text) = output::structured(format, &tasks)? {
                text
            } else if tasks.is_empty() {
                eprintln!("no tasks");
                return Ok(());
            } else if format == ListFormat::Wide {
                let machines = client.machines().await?.machines;
                let resolved = client.resolve(&job).await?;
                let placement = output::Placement::new(&machines, &resolved);
                output::tasks_table_wide(&view, &tasks, &placement, now)
            } else {
                output::tasks_table(&view, &tasks, now)
            }
        }
        What::Machines { state } => {
            let mut list = client.machines().await?;
            list.machines = filter_machines(list.machines, &state);
            if let Some(text) = output::structured(format, &list)? {
                text
            } else if list.machines.is_empty() {
                eprintln!("no machines");
                return Ok(());
            } else if format == ListFormat::Wide {
                output::machines_table_wide(&list.machines, now)
            } else {
                output::machines_table(&list.machines, now)
            }
        }
        What::Events(_) => unreachable!("handled above"),
    };
    emit(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::{job, machine, task};
    use crate::{Cli, Command};
    use borg_shared::JobKind;
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
        assert!(matches!(a.what, What::Jobs { .. }));
        assert_eq!(a.output, ListFormat::Json);
        let a = parse(&["get", "-o", "yaml", "machines"]);
        assert!(matches!(a.what, What::Machines { .. }));
        assert_eq!(a.output, ListFormat::Yaml);
        let a = parse(&["get", "task", "hello", "-o", "wide"]);
        assert!(matches!(a.what, What::Tasks { ref job, .. } if job == "hello"));
        assert_eq!(a.output, ListFormat::Wide);
        let a = parse(&["get", "tasks", "hello"]);
        assert_eq!(a.output, ListFormat::Table);
    }

    #[test]
    fn filters_parse_lists_of_states() {
        let a = parse(&["get", "jobs", "--state", "running,pending"]);
        assert!(
            matches!(a.what, What::Jobs { ref state } if *state == [JobState::Running, JobState::Pending])
        );
        let a = parse(&[
            "get",
            "tasks",
            "web",
            "--state",
            "failed",
            "--machine",
            "m2",
        ]);
        assert!(matches!(a.what, What::Tasks { ref state, ref machine, .. }
            if *state == [TaskState::Failed] && machine.as_deref() == Some("m2")));
        let a = parse(&["get", "machines", "--state", "draining"]);
        assert!(
            matches!(a.what, What::Machines { ref state } if *state == [MachineState::Draining])
        );
    }

    #[test]
    fn bad_format_or_state_is_a_usage_error() {
        for args in [
            &["jobctl", "get", "jobs", "-o", "xml"][..],
            &["jobctl", "get", "tasks"],
            &["jobctl", "get", "jobs", "--state", "sleeping"],
            &["jobctl", "get", "machines", "--machine", "m1"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn filters_keep_what_matches() {
        let mut a = task(0, TaskState::Running);
        a.machine = Some("m1".into());
        let mut b = task(1, TaskState::Running);
        b.machine = Some("m2".into());
        let c = task(2, TaskState::Pending);
        let all = vec![a, b, c];
        let idx = |ts: Vec<TaskView>| ts.iter().map(|t| t.index).collect::<Vec<_>>();
        assert_eq!(idx(filter_tasks(all.clone(), &[], None)), [0, 1, 2]);
        assert_eq!(
            idx(filter_tasks(all.clone(), &[TaskState::Running], None)),
            [0, 1]
        );
        assert_eq!(idx(filter_tasks(all.clone(), &[], Some("m2"))), [1]);
        assert_eq!(
            idx(filter_tasks(all, &[TaskState::Pending], Some("m2"))),
            Vec::<i32>::new()
        );

        let jobs = vec![
            job("a", JobKind::Batch, JobState::Running, vec![]),
            job("b", JobKind::Batch, JobState::Failed, vec![]),
        ];
        let names = filter_jobs(jobs, &[JobState::Failed]);
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].name, "b");

        let mut m2 = machine("m2", "b");
        m2.state = MachineState::Draining;
        let ms = filter_machines(vec![machine("m1", "a"), m2], &[MachineState::Up]);
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].name, "m1");
    }
}

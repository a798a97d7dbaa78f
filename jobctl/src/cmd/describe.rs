//! `jobctl describe job NAME|task JOB/INDEX|machine NAME`: everything about one
//! thing on one screen, the way `kubectl describe` reads: header fields, the
//! task table, why pending, how tasks ended, recent events. The task and the
//! machine pages are in `describe_more.rs`.

use crate::client::Client;
use crate::output::{self, age, emit, table, task_name};
use borg_shared::wire::{DeathCause, EventView, JobView, TaskView};
use chrono::{DateTime, Utc};
use std::fmt::Write;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// A job, its tasks and their recent events.
    Job {
        /// The job's name.
        name: String,
    },
    /// One task: where it runs (machine, node, ports), usage, restarts, why
    /// pending, how it ended, its recent events.
    Task {
        /// The task, as JOB/INDEX (e.g. `hello/0`).
        #[arg(value_parser = super::logs::parse_task, value_name = "JOB/INDEX")]
        task: (String, u32),
    },
    /// One machine: capacity, allocation, usage, its tasks, recent events.
    Machine {
        /// The machine's name.
        name: String,
    },
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let name = match args.what {
        What::Job { name } => name,
        What::Task { task: (job, index) } => {
            return super::describe_more::task(client, &job, index).await
        }
        What::Machine { name } => return super::describe_more::machine(client, &name).await,
    };
    let job = client.job_with_all_tasks(&name).await?;
    let now = Utc::now();
    // Ports are held by running tasks only; ask where they are when the job has any.
    let placement = if job.spec.task.resources.ports > 0 {
        let machines = client.machines().await?.machines;
        output::Placement::new(&machines, &client.resolve(&job.name).await?)
    } else {
        output::Placement::default()
    };
    let mut text = render_with(&job, &placement, now);
    // A job that was ever updated shows its rollout (a failure to read it is not the job's).
    if job.version > 1 {
        if let Ok(r) = client.rollout(&job.name).await {
            text.push('\n');
            text.push_str(crate::cmd::rollout::describe(&r, now).trim_end());
        }
    }
    emit(&text)?;
    Ok(())
}

pub(crate) fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} ({} ago)",
        t.format("%Y-%m-%d %H:%M:%S UTC"),
        age(t, now)
    )
}

pub(crate) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn render(job: &JobView, now: DateTime<Utc>) -> String {
    render_with(job, &output::Placement::default(), now)
}

/// The page, with the node and ports of running tasks from `placement`.
pub fn render_with(job: &JobView, placement: &output::Placement, now: DateTime<Utc>) -> String {
    let spec = &job.spec;
    let task = &spec.task;
    let res = &task.resources;
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", job.name.clone()),
        ("Kind", job.kind.to_string()),
        ("State", job.state.to_string()),
        ("Owner", job.owner.clone()),
        ("Priority", job.priority.to_string()),
        ("Replicas", job.replicas.to_string()),
        ("Version", job.version.to_string()),
        ("Progress", output::task_summary(job)),
        ("Created", when(job.created_at, now)),
    ];
    if let Some(t) = job.finished_at {
        fields.push(("Finished", when(t, now)));
    }
    fields.push((
        "Command",
        serde_json::to_string(&task.command).unwrap_or_default(),
    ));
    if !task.env.is_empty() {
        let env = task.env.iter().map(|(k, v)| format!("{k}={v}"));
        fields.push(("Env", env.collect::<Vec<_>>().join(" ")));
    }
    let mut resources = format!("cpu {}, memory {}", res.cpu, res.memory);
    if res.disk.0 > 0 {
        write!(resources, ", disk {}", res.disk).ok();
    }
    if res.ports > 0 {
        write!(resources, ", ports {}", res.ports).ok();
    }
    if let Some(limit) = res.cpu_limit {
        write!(resources, ", cpu limit {limit}").ok();
    }
    if let Some(limit) = res.memory_limit {
        write!(resources, ", memory limit {limit}").ok();
    }
    fields.push(("Resources", resources));
    if let Some(r) = &task.restart {
        let mut text = Vec::new();
        if let Some(n) = r.max_attempts {
            text.push(format!("max {n} attempts"));
        }
        if let Some(b) = r.backoff {
            text.push(format!("backoff {}", humantime::format_duration(b)));
        }
        if !text.is_empty() {
            fields.push(("Restart", text.join(", ")));
        }
    }
    if let Some(h) = &task.health {
        fields.push(("Health check", health_check_text(h)));
    }
    if !spec.constraints.is_empty() {
        let c = spec.constraints.iter().map(ToString::to_string);
        fields.push(("Constraints", c.collect::<Vec<_>>().join("; ")));
    }
    if let Some(spread) = &spec.spread {
        let mut text = Vec::new();
        if let Some(label) = &spread.label {
            text.push(format!("by {label}"));
        }
        if let Some(n) = spread.max_per_machine {
            text.push(format!("at most {n} per machine"));
        }
        fields.push(("Spread", text.join(", ")));
    }

    // Key, colon, two spaces.
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    let mut out = String::new();
    for (key, value) in &fields {
        writeln!(out, "{:<width$}{value}", format!("{key}:")).ok();
    }

    out.push_str("\nTasks:\n");
    match job.tasks.as_deref() {
        Some(tasks) if !tasks.is_empty() => {
            out.push_str(&indent(&output::tasks_table(job, tasks, now)));
            out.push('\n');
        }
        _ => out.push_str("  <none>\n"),
    }
    if !placement.ports.is_empty() {
        out.push_str("\nPorts (running tasks):\n");
        for t in job.tasks.iter().flatten() {
            let Some(ports) = placement.ports.get(&t.index) else {
                continue;
            };
            let node = t.machine.as_ref().and_then(|m| placement.hosts.get(m));
            let at = node.map(|n| format!(" on {n}")).unwrap_or_default();
            writeln!(
                out,
                "  {}: {}{at}",
                task_name(&job.name, t.index),
                output::ports_text(ports)
            )
            .ok();
        }
    }
    let probed: Vec<String> = job
        .tasks
        .iter()
        .flatten()
        .filter_map(|t| health_text(&job.name, t))
        .collect();
    if !probed.is_empty() {
        out.push_str("\nHealth (current attempts):\n");
        for line in probed {
            out.push_str(&indent(&line));
            out.push('\n');
        }
    }
    let ended: Vec<&TaskView> = job
        .tasks
        .iter()
        .flatten()
        .filter(|t| t.death.is_some())
        .collect();
    if !ended.is_empty() {
        out.push_str("\nHow tasks ended (latest attempt):\n");
        for t in ended {
            out.push_str(&indent(&death_text(&job.name, t)));
            out.push('\n');
        }
    }

    out.push_str("\nEvents:\n");
    match job.events.as_deref() {
        Some(events) if !events.is_empty() => {
            out.push_str(&indent(&events_table(events, now)));
        }
        _ => out.push_str("  <none>"),
    }
    out
}

/// `http GET /healthz on port 0, every 10s, timeout 2s, 3 failures in a row, first after 5s`.
fn health_check_text(h: &borg_shared::spec::HealthCheck) -> String {
    let what = match (&h.http, &h.tcp, &h.exec) {
        (Some(http), _, _) => format!("http GET {} on port {}", http.path, http.port),
        (_, Some(tcp), _) => format!("tcp connect to port {}", tcp.port),
        (_, _, Some(exec)) => format!(
            "exec {}",
            serde_json::to_string(&exec.command).unwrap_or_default()
        ),
        _ => "none".into(),
    };
    let d = |d| humantime::format_duration(d).to_string();
    format!(
        "{what}, every {}, timeout {}, {} failures in a row, first after {}",
        d(h.interval()),
        d(h.timeout()),
        h.failures(),
        d(h.initial_delay())
    )
}

/// One running task's health, when a probe has said something of it.
pub(crate) fn health_text(job: &str, t: &TaskView) -> Option<String> {
    let verdict = match t.healthy {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "not decided yet",
    };
    match (&t.healthy, &t.health_message) {
        (None, None) => None,
        (_, Some(why)) => Some(format!(
            "{}: {verdict} (last probe: {why})",
            task_name(job, t.index)
        )),
        (_, None) => Some(format!("{}: {verdict}", task_name(job, t.index))),
    }
}

/// Lines of stderr shown per task: the 4 KiB kept can be long.
const STDERR_LINES: usize = 5;

/// One task's death certificate: the cause line, then the end of its stderr.
pub(crate) fn death_text(job: &str, t: &TaskView) -> String {
    let Some(d) = &t.death else {
        return String::new();
    };
    let mut line = format!("{}: {}", task_name(job, t.index), d.cause.as_str());
    match (d.cause, d.exit_code, d.signal) {
        (DeathCause::Killed, _, _) => {
            if let Some(by) = &d.killed_by {
                write!(line, " ({by})").ok();
            }
        }
        (_, Some(code), _) => write!(line, ", exit code {code}").ok().unwrap_or(()),
        (_, _, Some(sig)) => write!(line, ", signal {sig}").ok().unwrap_or(()),
        _ => {}
    }
    if let Some(peak) = d.peak_memory {
        write!(line, ", peak memory {peak}").ok();
    }
    if let Some(tail) = d.stderr_tail.as_deref().filter(|s| !s.trim().is_empty()) {
        let lines: Vec<&str> = tail.lines().collect();
        let shown = &lines[lines.len().saturating_sub(STDERR_LINES)..];
        line.push_str("\n  stderr (end):");
        for l in shown {
            write!(line, "\n    {l}").ok();
        }
    }
    line
}

pub(crate) fn events_table(events: &[EventView], now: DateTime<Utc>) -> String {
    let rows = events
        .iter()
        .map(|e| {
            let task = e
                .task_index
                .map(|i| task_name(&e.job, i))
                .unwrap_or_else(|| e.job.clone());
            let change = match e.from {
                Some(from) => format!("{from} -> {}", e.to),
                None => e.to.to_string(),
            };
            vec![
                format!("{} ({} ago)", e.time.format("%H:%M:%S"), age(e.time, now)),
                task,
                change,
                e.machine.clone().unwrap_or_else(|| "-".into()),
                e.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["TIME (UTC)", "TASK", "CHANGE", "MACHINE", "REASON"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::*;
    use borg_shared::{JobKind, JobState, TaskState};
    use chrono::Duration;

    #[test]
    fn describe_shows_fields_tasks_and_events() {
        let mut running = task(0, TaskState::Running);
        running.machine = Some("m1".into());
        running.runs = 1;
        running.version = Some(1);
        let mut pending = task(1, TaskState::Pending);
        pending.reason = Some("no machine has 64Gi free memory".into());
        let mut j = job(
            "hello",
            JobKind::Batch,
            JobState::Running,
            vec![running, pending],
        );
        let mut e = event(7, "hello", 0, Some(TaskState::Assigned), TaskState::Running);
        e.machine = Some("m1".into());
        e.time = t0() + Duration::seconds(3);
        j.events = Some(vec![event(1, "hello", 0, None, TaskState::Pending), e]);

        let out = render(&j, t0() + Duration::minutes(2));
        let expected = "\
Name:       hello
Kind:       batch
State:      running
Owner:      default
Priority:   100
Replicas:   2
Version:    1
Progress:   1 pending, 1 running
Created:    2026-05-01 12:00:00 UTC (2m ago)
Command:    [\"/bin/sh\",\"-c\",\"echo hi\"]
Resources:  cpu 250m, memory 64Mi

Tasks:
  TASK      STATE     VERSION   MACHINE   RUNS   RESTARTS   EXIT   CPU   MEMORY   REASON                            AGE
  hello/0   running   1         m1        1      0          -      -     -        -                                 2m
  hello/1   pending   -         -         0      0          -      -     -        no machine has 64Gi free memory   2m

Events:
  TIME (UTC)            TASK      CHANGE                MACHINE   REASON
  12:00:00 (2m ago)     hello/0   pending               -         -
  12:00:03 (117s ago)   hello/0   assigned -> running   m1        -";
        assert_eq!(out, expected);
    }

    #[test]
    fn describe_shows_how_tasks_ended() {
        use borg_shared::wire::DeathCertificate;
        use borg_shared::Bytes;
        let mut oom = task(0, TaskState::Failed);
        oom.reason = Some("oom-killed".into());
        oom.signal = Some(9);
        oom.death = Some(DeathCertificate {
            cause: DeathCause::OomKilled,
            exit_code: None,
            signal: Some(9),
            killed_by: None,
            peak_memory: Some(Bytes(32 << 20)),
            stderr_tail: Some("l1\nl2\nl3\nl4\nl5\nl6\nabout to eat\n".into()),
        });
        let mut killed = task(1, TaskState::Killed);
        killed.death = Some(DeathCertificate {
            cause: DeathCause::Killed,
            exit_code: None,
            signal: Some(15),
            killed_by: Some("killed by admin".into()),
            peak_memory: None,
            stderr_tail: None,
        });
        let j = job("eat", JobKind::Batch, JobState::Failed, vec![oom, killed]);
        let out = render(&j, t0());
        let expected = "
How tasks ended (latest attempt):
  eat/0: oom-killed, signal 9, peak memory 32Mi
    stderr (end):
      l3
      l4
      l5
      l6
      about to eat
  eat/1: killed (killed by admin)
";
        assert!(out.contains(expected), "{out}");
    }

    #[test]
    fn describe_without_tasks_or_events() {
        let mut j = job("empty", JobKind::Service, JobState::Pending, vec![]);
        j.events = None;
        let out = render(&j, t0());
        assert!(out.contains("\nTasks:\n  <none>\n"), "{out}");
        assert!(out.ends_with("\nEvents:\n  <none>"), "{out}");
    }
}

//! Rendering for people and for scripts: kubectl-like aligned tables (no
//! borders), `-o wide|json|yaml`, ages, and the one-line error. Every function
//! here is pure (the clock is a parameter) so tests can pin the output; the
//! snapshot tests in `snapshots.rs` render fixed data from `fixtures.rs`.

mod wide;
pub use wide::{free_text, jobs_table_wide, machines_table_wide, tasks_table_wide, Placement};

use borg_shared::wire::{JobView, MachineView, TaskView};
use borg_shared::TaskState;
use chrono::{DateTime, Utc};
use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

/// `-o table` (default) or `-o json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// The formats of `get`: `table` (default), `wide` (more columns), `json`, `yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Wide,
    Json,
    Yaml,
}

/// The single line printed after `error: `: the error and its context, joined,
/// with any embedded newlines folded so the line stays one line.
pub fn error_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Columns separated by three spaces, the first flush left, no trailing blanks.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
        column.set_cell_alignment(CellAlignment::Left);
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// kubectl-style age: `45s`, `3m`, `5h`, `2d`. A clock behind the server's reads as `0s`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub(crate) fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// `3/3 running` when every task is in one state, else the counts by state
/// (`1 pending, 2 running`) in lifecycle order.
pub fn task_summary(job: &JobView) -> String {
    let nonzero: Vec<(TaskState, i64)> = job
        .task_counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (*s, *n))
        .collect();
    match nonzero.as_slice() {
        [] => format!("0/{}", job.replicas),
        [(state, n)] => format!("{n}/{} {state}", job.replicas),
        many => many
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// How a finished task ended: `0`, `1`, `sig 9`; `-` while it runs.
pub fn exit_text(task: &TaskView) -> String {
    match (task.exit_code, task.signal) {
        (_, Some(sig)) => format!("sig {sig}"),
        (Some(code), None) => code.to_string(),
        (None, None) => "-".into(),
    }
}

/// In-place restarts of the current attempt and how the run before the latest
/// ended: `2 (exited with code 3)`; `0` without any.
pub fn restarts_text(task: &TaskView) -> String {
    match &task.last_exit {
        Some(last) if task.restarts > 0 => format!("{} ({last})", task.restarts),
        _ => task.restarts.to_string(),
    }
}

/// How much of the last end a table's RESTARTS cell shows: a health check's
/// message can run past 100 characters (`describe` shows it whole).
const LAST_EXIT_IN_TABLE: usize = 40;

/// The RESTARTS cell of a task table: [`restarts_text`], the last end cut to
/// `LAST_EXIT_IN_TABLE` characters with `…`.
pub fn restarts_cell(task: &TaskView) -> String {
    match &task.last_exit {
        Some(last) if task.restarts > 0 && last.chars().count() > LAST_EXIT_IN_TABLE => {
            let cut: String = last.chars().take(LAST_EXIT_IN_TABLE - 1).collect();
            format!("{} ({}…)", task.restarts, cut.trim_end())
        }
        _ => restarts_text(task),
    }
}

/// The task's state, with what its run is doing when it runs: `running/backoff`
/// (its process exited; the borglet restarts it after a wait), else its health
/// once a probe has decided: `running/healthy`, `running/unhealthy`.
pub fn state_text(task: &TaskView) -> String {
    match (task.state, task.healthy) {
        (TaskState::Running, _) if task.backoff => "running/backoff".into(),
        (TaskState::Running, Some(true)) => "running/healthy".into(),
        (TaskState::Running, Some(false)) => "running/unhealthy".into(),
        (state, _) => state.to_string(),
    }
}

pub fn task_name(job: &str, index: i32) -> String {
    format!("{job}/{index}")
}

pub fn jobs_table(jobs: &[JobView], now: DateTime<Utc>) -> String {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.name.clone(),
                j.kind.to_string(),
                j.state.to_string(),
                task_summary(j),
                j.priority.to_string(),
                j.owner.clone(),
                age(j.created_at, now),
            ]
        })
        .collect();
    table(
        &["NAME", "KIND", "STATE", "TASKS", "PRIORITY", "OWNER", "AGE"],
        rows,
    )
}

/// The job version a task's attempt runs; `(stale)` when it is not the job's.
pub fn version_text(task: &TaskView, job_version: i32) -> String {
    match task.version {
        Some(v) if v != job_version => format!("{v} (stale)"),
        Some(v) => v.to_string(),
        None => "-".to_string(),
    }
}

pub fn tasks_table(job: &JobView, tasks: &[TaskView], now: DateTime<Utc>) -> String {
    let rows = tasks
        .iter()
        .map(|t| {
            vec![
                task_name(&job.name, t.index),
                state_text(t),
                version_text(t, job.version),
                or_dash(t.machine.as_ref()),
                t.runs.to_string(),
                restarts_cell(t),
                exit_text(t),
                or_dash(t.usage.map(|u| u.cpu)),
                or_dash(t.usage.map(|u| u.memory)),
                or_dash(t.reason.as_ref()),
                age(t.updated_at, now),
            ]
        })
        .collect();
    table(
        &[
            "TASK", "STATE", "VERSION", "MACHINE", "RUNS", "RESTARTS", "EXIT", "CPU", "MEMORY",
            "REASON", "AGE",
        ],
        rows,
    )
}

pub fn machines_table(machines: &[MachineView], now: DateTime<Utc>) -> String {
    machine_columns(machines, now, false)
}

/// The machines table, narrow or `-o wide`: one list of columns, the wide ones
/// (disk, free, port range) only when `wide`.
pub(crate) fn machine_columns(machines: &[MachineView], now: DateTime<Utc>, wide: bool) -> String {
    type Column = (
        &'static str,
        bool,
        fn(&MachineView, DateTime<Utc>) -> String,
    );
    const COLUMNS: &[Column] = &[
        ("NAME", false, |m, _| m.name.clone()),
        ("STATE", false, |m, _| m.state.to_string()),
        ("ADDRESS", false, |m, _| m.address.clone()),
        ("CPU", false, |m, _| {
            format!("{}/{}", m.allocated.cpu, m.capacity.cpu)
        }),
        ("MEMORY", false, |m, _| {
            format!("{}/{}", m.allocated.memory, m.capacity.memory)
        }),
        ("DISK", true, |m, _| {
            format!("{}/{}", m.allocated.disk, m.capacity.disk)
        }),
        ("FREE", true, |m, _| wide::free_text(m)),
        ("USED", false, |m, _| {
            m.usage
                .map(|u| format!("{}, {}", u.cpu, u.memory))
                .unwrap_or_else(|| "-".into())
        }),
        ("TASKS", false, |m, _| m.tasks.to_string()),
        ("PORTS", true, |m, _| {
            format!("{}-{}", m.ports.first, m.ports.last)
        }),
        ("ISOLATION", false, |m, _| {
            or_dash(m.isolation.map(|i| i.as_str()))
        }),
        ("VERSION", false, |m, _| or_dash(m.version.as_ref())),
        ("LABELS", false, |m, _| {
            let labels = m
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            if labels.is_empty() {
                "-".into()
            } else {
                labels
            }
        }),
        ("LAST-HEARD", false, |m, now| {
            m.last_heard
                .map(|t| format!("{} ago", age(t, now)))
                .unwrap_or_else(|| "never".into())
        }),
    ];
    let shown: Vec<&Column> = COLUMNS.iter().filter(|c| wide || !c.1).collect();
    let rows = machines
        .iter()
        .map(|m| shown.iter().map(|c| (c.2)(m, now)).collect())
        .collect();
    let header: Vec<&str> = shown.iter().map(|c| c.0).collect();
    table(&header, rows)
}

/// Print `text` and a newline on stdout. A closed pipe (`| head`) ends the
/// output quietly instead of failing.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Pretty JSON for `-o json`.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// YAML for `-o yaml` (the same fields as JSON), without a trailing newline.
pub fn yaml<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(serde_yaml_ng::to_string(value)?.trim_end().to_string())
}

/// `-o json` or `-o yaml` of `value`; `None` for the table formats.
pub fn structured<T: serde::Serialize>(
    format: ListFormat,
    value: &T,
) -> anyhow::Result<Option<String>> {
    match format {
        ListFormat::Json => json(value).map(Some),
        ListFormat::Yaml => yaml(value).map(Some),
        ListFormat::Table | ListFormat::Wide => Ok(None),
    }
}

/// The host of a borglet's address (`http://10.0.0.7:7701` → `10.0.0.7`).
pub fn host_of(address: &str) -> String {
    reqwest::Url::parse(address)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| address.to_string())
}

/// Ports as `20000,20001`; `-` for none.
pub fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "-".into();
    }
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod snapshots;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use borg_shared::{JobKind, JobState, TaskState};
    use chrono::Duration;

    #[test]
    fn ages_read_like_kubectl() {
        let t = t0();
        assert_eq!(age(t, t + Duration::seconds(45)), "45s");
        assert_eq!(age(t, t + Duration::seconds(119)), "119s");
        assert_eq!(age(t, t + Duration::minutes(3)), "3m");
        assert_eq!(age(t, t + Duration::hours(5)), "5h");
        assert_eq!(age(t, t + Duration::days(3)), "3d");
        assert_eq!(age(t + Duration::seconds(5), t), "0s");
    }

    #[test]
    fn jobs_table_is_aligned_without_borders() {
        let a = job(
            "hello",
            JobKind::Batch,
            JobState::Running,
            vec![
                task(0, TaskState::Running),
                task(1, TaskState::Running),
                task(2, TaskState::Running),
            ],
        );
        let b = job(
            "web-frontend",
            JobKind::Service,
            JobState::Pending,
            vec![task(0, TaskState::Pending), task(1, TaskState::Running)],
        );
        let out = jobs_table(&[a, b], t0() + Duration::minutes(5));
        let expected = "\
NAME           KIND      STATE     TASKS                  PRIORITY   OWNER     AGE
hello          batch     running   3/3 running            100        default   5m
web-frontend   service   pending   1 pending, 1 running   100        default   5m";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_long_last_end_is_cut_in_the_table_and_whole_in_describe() {
        let mut t = task(0, TaskState::Running);
        t.restarts = 3;
        t.last_exit = Some(
            "health check failed: connect to port 20000: Connection refused (2 probes in a row)"
                .into(),
        );
        assert_eq!(
            restarts_cell(&t),
            "3 (health check failed: connect to port 20…)"
        );
        assert!(restarts_text(&t).ends_with("(2 probes in a row))"));
        t.last_exit = Some("oom-killed, peak memory 64Mi".into());
        assert_eq!(restarts_cell(&t), "3 (oom-killed, peak memory 64Mi)");
    }

    #[test]
    fn tasks_table_shows_machine_exit_and_reason() {
        let mut t0_ = task(0, TaskState::Succeeded);
        t0_.machine = Some("m1".into());
        t0_.runs = 1;
        t0_.exit_code = Some(0);
        let mut t1 = task(1, TaskState::Pending);
        t1.reason = Some("no machine has 64Gi free memory".into());
        let mut t2 = task(2, TaskState::Failed);
        t2.machine = Some("m3".into());
        t2.runs = 3;
        t2.signal = Some(9);
        t2.restarts = 1;
        t2.last_exit = Some("exited with code 3".into());
        let mut t3 = task(3, TaskState::Running);
        t3.machine = Some("m1".into());
        t3.runs = 1;
        t3.usage = Some(borg_shared::wire::ResourceUsage {
            cpu: borg_shared::MilliCpu(1500),
            memory: borg_shared::Bytes(48 << 20),
        });
        t0_.version = Some(1);
        t3.version = Some(2);
        let mut t4 = task(4, TaskState::Running);
        t4.healthy = Some(true);
        let mut t5 = task(5, TaskState::Running);
        t5.healthy = Some(false);
        // Waiting to be restarted in place: that, not the last run's health.
        let mut t6 = task(6, TaskState::Running);
        t6.healthy = Some(true);
        t6.backoff = true;
        let mut j = job("hello", JobKind::Batch, JobState::Running, vec![]);
        j.version = 2;
        let tasks = [t0_, t1, t2, t3, t4, t5, t6];
        let out = tasks_table(&j, &tasks, t0() + Duration::seconds(30));
        let expected = "\
TASK      STATE               VERSION     MACHINE   RUNS   RESTARTS                 EXIT    CPU     MEMORY   REASON                            AGE
hello/0   succeeded           1 (stale)   m1        1      0                        0       -       -        -                                 30s
hello/1   pending             -           -         0      0                        -       -       -        no machine has 64Gi free memory   30s
hello/2   failed              -           m3        3      1 (exited with code 3)   sig 9   -       -        -                                 30s
hello/3   running             2           m1        1      0                        -       1500m   48Mi     -                                 30s
hello/4   running/healthy     -           -         0      0                        -       -       -        -                                 30s
hello/5   running/unhealthy   -           -         0      0                        -       -       -        -                                 30s
hello/6   running/backoff     -           -         0      0                        -       -       -        -                                 30s";
        assert_eq!(out, expected);
    }

    #[test]
    fn machines_table_shows_alloc_over_capacity() {
        let out = machines_table(
            &[machine("m1", "a"), machine("m2", "b")],
            t0() + Duration::seconds(2),
        );
        let expected = "\
NAME   STATE   ADDRESS                 CPU      MEMORY     USED         TASKS   ISOLATION   VERSION   LABELS   LAST-HEARD
m1     up      http://127.0.0.1:7701   250m/2   64Mi/4Gi   120m, 30Mi   1       v1          0.1.0     zone=a   2s ago
m2     up      http://127.0.0.1:7702   250m/2   64Mi/4Gi   120m, 30Mi   1       v1          0.1.0     zone=b   2s ago";
        assert_eq!(out, expected);
    }

    #[test]
    fn summary_of_a_job_with_no_tasks() {
        let j = job("empty", JobKind::Batch, JobState::Pending, vec![]);
        assert_eq!(task_summary(&j), "0/0");
    }

    #[test]
    fn error_line_is_one_line_with_context() {
        let e = anyhow::anyhow!("bad thing\nat line 3").context("reading hello.yaml");
        assert_eq!(error_line(&e), "reading hello.yaml: bad thing at line 3");
    }
}

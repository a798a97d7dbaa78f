//! `jobctl describe task JOB/INDEX` and `describe machine NAME`. Fetching is
//! in `task`/`machine`; rendering (`render_task`, `render_machine`) is pure.

use super::describe::{death_text, events_table, health_text, indent, when};
use crate::client::{Client, ClientError};
use crate::events::{event_line, EventStream, Query};
use crate::output::{self, emit, Placement};
use borg_shared::event_stream::StreamEvent;
use borg_shared::wire::{JobView, MachineView, TaskView};
use borg_shared::{ApiError, TaskState};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::fmt::Write;

/// Recent events shown on a machine's page.
const MACHINE_EVENTS: usize = 10;

pub async fn task(client: &Client, job: &str, index: u32) -> anyhow::Result<()> {
    let view = client.job_with_all_tasks(job).await?;
    let Some(task) = view
        .tasks
        .iter()
        .flatten()
        .find(|t| i64::from(t.index) == i64::from(index))
        .cloned()
    else {
        return Err(not_found(format!(
            "job {job} has no task {index} (it has {} replicas)",
            view.replicas
        )));
    };
    let placement = match task.machine {
        Some(_) => Placement::new(
            &client.machines().await?.machines,
            &client.resolve(job).await?,
        ),
        None => Placement::default(),
    };
    emit(&render_task(&view, &task, &placement, Utc::now()))?;
    Ok(())
}

pub async fn machine(client: &Client, name: &str) -> anyhow::Result<()> {
    let machines = client.machines().await?.machines;
    let Some(m) = machines.into_iter().find(|m| m.name == name) else {
        return Err(not_found(format!("no machine named {name}")));
    };
    let query = Query {
        machine: Some(name.to_string()),
        history: true,
        ..Default::default()
    };
    let mut recent = VecDeque::with_capacity(MACHINE_EVENTS + 1);
    let mut stream = EventStream::open(client, query).await?;
    while let Some(e) = stream.next().await? {
        recent.push_back(e);
        if recent.len() > MACHINE_EVENTS {
            recent.pop_front();
        }
    }
    let recent: Vec<StreamEvent> = recent.into();
    emit(&render_machine(&m, &recent, Utc::now()))?;
    Ok(())
}

/// A not-found error that exits 3 like the master's 404s.
fn not_found(message: String) -> anyhow::Error {
    ClientError::Api {
        status: reqwest::StatusCode::NOT_FOUND,
        error: ApiError {
            code: "not_found".into(),
            message,
            field: None,
        },
    }
    .into()
}

fn fields_text(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    let mut out = String::new();
    for (key, value) in fields {
        writeln!(out, "{:<width$}{value}", format!("{key}:")).ok();
    }
    out
}

/// `120m of 250m requested`; `-` before the first sample.
fn used_of(used: Option<String>, requested: String) -> String {
    match used {
        Some(u) => format!("{u} of {requested} requested"),
        None => format!("- of {requested} requested"),
    }
}

pub fn render_task(
    job: &JobView,
    t: &TaskView,
    placement: &Placement,
    now: DateTime<Utc>,
) -> String {
    let res = &job.spec.task.resources;
    let mut fields: Vec<(&str, String)> = vec![
        ("Task", output::task_name(&job.name, t.index)),
        ("Job", format!("{} ({}, {})", job.name, job.kind, job.state)),
        ("State", output::state_text(t)),
    ];
    if let Some(reason) = &t.reason {
        let key = if t.state == TaskState::Pending {
            "Why pending"
        } else {
            "Reason"
        };
        fields.push((key, reason.clone()));
    }
    if let Some(m) = &t.machine {
        fields.push(("Machine", m.clone()));
        if let Some(host) = placement.hosts.get(m) {
            fields.push(("Node", host.clone()));
        }
    }
    if res.ports > 0 {
        let ports = placement
            .ports
            .get(&t.index)
            .map(|p| output::ports_text(p))
            .unwrap_or_else(|| format!("{} asked, none held (not running)", res.ports));
        fields.push(("Ports", ports));
    }
    if let Some(a) = t.attempt {
        fields.push(("Attempt", a.to_string()));
    }
    fields.push(("Version", output::version_text(t, job.version)));
    if let Some(old) = &t.superseded {
        // A surging rollout: the old copy runs until the new one is ready.
        let stopping = if old.stopping { ", stopping" } else { "" };
        fields.push((
            "Superseded",
            format!(
                "attempt {} (version {}) on {}, {}{stopping}",
                old.attempt, old.version, old.machine, old.state
            ),
        ));
    }
    if let Some(pid) = t.pid {
        fields.push(("PID", pid.to_string()));
    }
    fields.push(("Runs", t.runs.to_string()));
    fields.push(("Restarts", output::restarts_text(t)));
    if t.exit_code.is_some() || t.signal.is_some() {
        fields.push(("Exit", output::exit_text(t)));
    }
    fields.push((
        "CPU",
        used_of(t.usage.map(|u| u.cpu.to_string()), res.cpu.to_string()),
    ));
    fields.push((
        "Memory",
        used_of(
            t.usage.map(|u| u.memory.to_string()),
            res.memory.to_string(),
        ),
    ));
    if let Some(h) = health_text(&job.name, t) {
        let verdict = h.split_once(": ").map_or(h.as_str(), |(_, v)| v);
        fields.push(("Health", verdict.to_string()));
    }
    fields.push(("Updated", when(t.updated_at, now)));
    let mut out = fields_text(&fields);
    if t.death.is_some() {
        out.push_str("\nHow it ended (latest attempt):\n");
        out.push_str(&indent(&death_text(&job.name, t)));
        out.push('\n');
    }
    out.push_str("\nEvents:\n");
    let mine: Vec<_> = job
        .events
        .iter()
        .flatten()
        .filter(|e| e.task_index == Some(t.index))
        .cloned()
        .collect();
    if mine.is_empty() {
        out.push_str("  <none>");
    } else {
        out.push_str(&indent(&events_table(&mine, now)));
    }
    out
}

pub fn render_machine(m: &MachineView, events: &[StreamEvent], now: DateTime<Utc>) -> String {
    let labels = m
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fields: Vec<(&str, String)> = vec![
        ("Name", m.name.clone()),
        ("State", m.state.to_string()),
        ("Address", m.address.clone()),
        ("Node", output::host_of(&m.address)),
        (
            "Labels",
            if labels.is_empty() {
                "<none>".into()
            } else {
                labels
            },
        ),
        (
            "Capacity",
            format!(
                "cpu {}, memory {}, disk {}",
                m.capacity.cpu, m.capacity.memory, m.capacity.disk
            ),
        ),
        (
            "Allocated",
            format!(
                "cpu {}, memory {}, disk {}",
                m.allocated.cpu, m.allocated.memory, m.allocated.disk
            ),
        ),
        ("Free", output::free_text(m)),
        (
            "Used",
            m.usage
                .map(|u| format!("cpu {}, memory {}", u.cpu, u.memory))
                .unwrap_or_else(|| "- (no sample yet)".into()),
        ),
        ("Tasks", m.tasks.to_string()),
        ("Ports", format!("{}-{}", m.ports.first, m.ports.last)),
        (
            "Isolation",
            m.isolation
                .map(|i| i.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("Version", m.version.clone().unwrap_or_else(|| "-".into())),
        (
            "Last heard",
            m.last_heard
                .map(|t| when(t, now))
                .unwrap_or_else(|| "never".into()),
        ),
    ];
    let mut out = fields_text(&fields);
    out.push_str("\nEvents (latest):\n");
    if events.is_empty() {
        out.push_str("  <none>");
    } else {
        let lines: Vec<String> = events.iter().map(event_line).collect();
        out.push_str(&indent(&lines.join("\n")));
    }
    out
}

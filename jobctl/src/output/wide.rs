//! `-o wide`: the default tables with the columns kubectl users look for next
//! (node address, ports, pid, attempt, requests, free capacity).

use super::{
    age, exit_text, host_of, or_dash, ports_text, restarts_cell, state_text, table, task_name,
    task_summary, version_text,
};
use borg_shared::wire::{JobView, MachineView, TaskView};
use borg_shared::{Bytes, MilliCpu};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Where a job's tasks are reachable, as far as the master says: the host of
/// each machine (from its address) and the ports of each running task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Machine name → host.
    pub hosts: BTreeMap<String, String>,
    /// Task index → its host ports.
    pub ports: BTreeMap<i32, Vec<u16>>,
}

impl Placement {
    pub fn new(machines: &[MachineView], resolved: &borg_shared::naming::Resolved) -> Placement {
        let mut hosts: BTreeMap<String, String> = machines
            .iter()
            .map(|m| (m.name.clone(), host_of(&m.address)))
            .collect();
        let mut ports = BTreeMap::new();
        for t in &resolved.tasks {
            hosts.insert(t.machine.clone(), t.host.clone());
            ports.insert(t.index, t.ports.clone());
        }
        Placement { hosts, ports }
    }
}

pub fn jobs_table_wide(jobs: &[JobView], now: DateTime<Utc>) -> String {
    let rows = jobs
        .iter()
        .map(|j| {
            let r = &j.spec.task.resources;
            vec![
                j.name.clone(),
                j.kind.to_string(),
                j.state.to_string(),
                task_summary(j),
                j.priority.to_string(),
                j.owner.clone(),
                j.version.to_string(),
                r.cpu.to_string(),
                r.memory.to_string(),
                r.ports.to_string(),
                age(j.created_at, now),
                j.finished_at
                    .map(|t| format!("{} ago", age(t, now)))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "STATE",
            "TASKS",
            "PRIORITY",
            "OWNER",
            "VERSION",
            "CPU/TASK",
            "MEMORY/TASK",
            "PORTS/TASK",
            "AGE",
            "FINISHED",
        ],
        rows,
    )
}

/// The attempt id's last 8 characters: its random part (the first ones are
/// its creation time, the same for every attempt placed in that minute).
fn short_attempt(t: &TaskView) -> String {
    t.attempt
        .map(|a| {
            let id = a.to_string();
            id[id.len() - 8..].to_string()
        })
        .unwrap_or_else(|| "-".into())
}

pub fn tasks_table_wide(
    job: &JobView,
    tasks: &[TaskView],
    placement: &Placement,
    now: DateTime<Utc>,
) -> String {
    let rows = tasks
        .iter()
        .map(|t| {
            let node = t
                .machine
                .as_ref()
                .and_then(|m| placement.hosts.get(m))
                .cloned();
            let ports = placement
                .ports
                .get(&t.index)
                .map(|p| ports_text(p))
                .unwrap_or_else(|| "-".into());
            vec![
                task_name(&job.name, t.index),
                state_text(t),
                version_text(t, job.version),
                or_dash(t.machine.as_ref()),
                or_dash(node),
                ports,
                t.runs.to_string(),
                restarts_cell(t),
                exit_text(t),
                or_dash(t.usage.map(|u| u.cpu)),
                or_dash(t.usage.map(|u| u.memory)),
                or_dash(t.pid),
                short_attempt(t),
                or_dash(t.reason.as_ref()),
                age(t.updated_at, now),
            ]
        })
        .collect();
    table(
        &[
            "TASK", "STATE", "VERSION", "MACHINE", "NODE", "PORTS", "RUNS", "RESTARTS", "EXIT",
            "CPU", "MEMORY", "PID", "ATTEMPT", "REASON", "AGE",
        ],
        rows,
    )
}

/// Capacity not yet allocated: `1750m, 3968Mi`.
pub fn free_text(m: &MachineView) -> String {
    let cpu = MilliCpu(m.capacity.cpu.0.saturating_sub(m.allocated.cpu.0));
    let memory = Bytes(m.capacity.memory.0.saturating_sub(m.allocated.memory.0));
    format!("{cpu}, {memory}")
}

pub fn machines_table_wide(machines: &[MachineView], now: DateTime<Utc>) -> String {
    super::machine_columns(machines, now, true)
}

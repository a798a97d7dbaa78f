//! Row shapes read from Postgres and their conversion to wire views.

use borg_shared::wire::{Capacity, EventView, JobView, MachineView, TaskView};
use borg_shared::{
    AttemptId, Bytes, JobId, JobKind, JobSpec, JobState, MachineId, MachineState, MilliCpu,
    TaskState,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::collections::BTreeMap;

#[derive(sqlx::FromRow)]
pub struct JobRow {
    pub id: JobId,
    pub name: String,
    pub kind: JobKind,
    pub state: JobState,
    pub owner: String,
    pub priority: i32,
    pub replicas: i32,
    pub spec: Json<JobSpec>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `[[state, count], ...]` aggregated in SQL.
    pub counts: Json<Vec<(TaskState, i64)>>,
}

impl JobRow {
    pub fn into_view(self) -> JobView {
        JobView {
            id: self.id,
            name: self.name,
            kind: self.kind,
            state: self.state,
            owner: self.owner,
            priority: self.priority.into(),
            replicas: self.replicas.into(),
            created_at: self.created_at,
            finished_at: self.finished_at,
            task_counts: self.counts.0.into_iter().collect(),
            spec: self.spec.0,
            tasks: None,
            events: None,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct TaskRow {
    pub index: i32,
    pub state: TaskState,
    pub reason: Option<String>,
    pub machine: Option<String>,
    pub attempt: Option<AttemptId>,
    pub runs: i32,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub updated_at: DateTime<Utc>,
}

impl From<TaskRow> for TaskView {
    fn from(r: TaskRow) -> TaskView {
        TaskView {
            index: r.index,
            state: r.state,
            reason: r.reason,
            machine: r.machine,
            attempt: r.attempt,
            runs: r.runs,
            pid: r.pid,
            exit_code: r.exit_code,
            signal: r.signal,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub job: String,
    pub task_index: Option<i32>,
    pub attempt: Option<AttemptId>,
    pub machine: Option<String>,
    pub from_state: Option<TaskState>,
    pub to_state: TaskState,
    pub reason: Option<String>,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> EventView {
        EventView {
            id: r.id,
            time: r.time,
            job: r.job,
            task_index: r.task_index,
            attempt: r.attempt,
            machine: r.machine,
            from: r.from_state,
            to: r.to_state,
            reason: r.reason,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct MachineRow {
    pub id: MachineId,
    pub name: String,
    pub address: String,
    pub state: MachineState,
    pub labels: Json<BTreeMap<String, String>>,
    pub cpu_milli: i64,
    pub memory: i64,
    pub disk: i64,
    pub used_cpu: i64,
    pub used_memory: i64,
    pub used_disk: i64,
    pub tasks: i64,
    pub last_heard: Option<DateTime<Utc>>,
}

fn capacity(cpu: i64, memory: i64, disk: i64) -> Capacity {
    Capacity {
        cpu: MilliCpu(cpu.max(0) as u64),
        memory: Bytes(memory.max(0) as u64),
        disk: Bytes(disk.max(0) as u64),
    }
}

impl From<MachineRow> for MachineView {
    fn from(r: MachineRow) -> MachineView {
        MachineView {
            id: r.id,
            name: r.name,
            address: r.address,
            state: r.state,
            labels: r.labels.0,
            capacity: capacity(r.cpu_milli, r.memory, r.disk),
            allocated: capacity(r.used_cpu, r.used_memory, r.used_disk),
            tasks: r.tasks,
            last_heard: r.last_heard,
        }
    }
}

/// What the poller needs to talk to a machine.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MachineTarget {
    pub id: MachineId,
    pub name: String,
    pub address: String,
    pub state: MachineState,
}

//! Row shapes read from Postgres and their conversion to wire views.

use borg_shared::wire::{
    Capacity, DeathCause, DeathCertificate, EventView, IsolationMode, JobView, MachineView,
    ResourceUsage, SupersededView, TaskView,
};
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
    pub version: i32,
    pub spec: Json<JobSpec>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Task counts by state: the sums of the job's counter shards.
    #[sqlx(flatten)]
    pub counts: Counts,
}

/// A job's task counts by state (see `job_counts`).
#[derive(Debug, Default, Clone, Copy, sqlx::FromRow)]
pub struct Counts {
    pub n_pending: i64,
    pub n_assigned: i64,
    pub n_starting: i64,
    pub n_running: i64,
    pub n_succeeded: i64,
    pub n_failed: i64,
    pub n_killed: i64,
    pub n_lost: i64,
}

impl Counts {
    pub fn by_state(&self) -> BTreeMap<TaskState, i64> {
        use TaskState::*;
        [
            (Pending, self.n_pending),
            (Assigned, self.n_assigned),
            (Starting, self.n_starting),
            (Running, self.n_running),
            (Succeeded, self.n_succeeded),
            (Failed, self.n_failed),
            (Killed, self.n_killed),
            (Lost, self.n_lost),
        ]
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect()
    }
}

/// The sums of a job's counter shards, as the `Counts` columns; `j` is the job.
pub const COUNTS_JOIN: &str = "LEFT JOIN LATERAL (
    SELECT COALESCE(sum(pending), 0)::bigint AS n_pending, COALESCE(sum(assigned), 0)::bigint AS n_assigned,
           COALESCE(sum(starting), 0)::bigint AS n_starting, COALESCE(sum(running), 0)::bigint AS n_running,
           COALESCE(sum(succeeded), 0)::bigint AS n_succeeded, COALESCE(sum(failed), 0)::bigint AS n_failed,
           COALESCE(sum(killed), 0)::bigint AS n_killed, COALESCE(sum(lost), 0)::bigint AS n_lost
    FROM job_counts WHERE job_id = j.id) c ON true";

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
            version: self.version,
            created_at: self.created_at,
            finished_at: self.finished_at,
            task_counts: self.counts.by_state(),
            spec: self.spec.0,
            tasks: None,
            tasks_next: None,
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
    /// The job version the attempt runs.
    pub version: Option<i32>,
    pub runs: i32,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub restarts: i32,
    pub last_exit: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Latest usage of the current attempt, while it is live.
    pub cpu_used_milli: Option<i64>,
    pub memory_used: Option<i64>,
    pub cause: Option<String>,
    pub killed_by: Option<String>,
    pub peak_memory: Option<i64>,
    pub stderr_tail: Option<String>,
    pub healthy: Option<bool>,
    pub health_message: Option<String>,
    pub in_backoff: Option<bool>,
    /// Its live superseded attempt (`SUPERSEDED_CTE`), if any.
    pub superseded_attempt: Option<AttemptId>,
    pub superseded_version: Option<i32>,
    pub superseded_machine: Option<String>,
    pub superseded_state: Option<TaskState>,
    pub superseded_stopping: Option<bool>,
}

/// The live superseded attempts (a surging rollout's old copies) of job `$1`,
/// the newest of each task, as `TaskRow`'s `superseded_*` columns: a `WITH`
/// item joined to the page by `g.task_id = t.id`. It reads the partial index
/// that holds only live superseded attempts (a handful, during rollouts), once,
/// not once per task; in the page's statement, so both see one snapshot.
pub const SUPERSEDED_CTE: &str = concat!(
    "g AS MATERIALIZED (
         SELECT DISTINCT ON (s.task_id) s.task_id, s.id AS superseded_attempt,
                s.version AS superseded_version, sm.name AS superseded_machine,
                s.state AS superseded_state, s.stop_reason IS NOT NULL AS superseded_stopping
         FROM attempts s JOIN tasks st ON st.id = s.task_id AND st.job_id = $1
         JOIN machines sm ON sm.id = s.machine_id
         WHERE s.superseded AND s.state IN ",
    crate::live_attempt!(),
    " ORDER BY s.task_id, s.created_at DESC)"
);

/// The attempt columns `TaskRow` reads beyond the task's; `a` is the attempt.
pub const TASK_ATTEMPT_COLUMNS: &str = concat!(
    "CASE WHEN a.state IN ",
    crate::live_attempt!(),
    " THEN a.cpu_used_milli END AS cpu_used_milli,
     CASE WHEN a.state IN ",
    crate::live_attempt!(),
    " THEN a.memory_used END AS memory_used,
     a.cause, a.killed_by, a.peak_memory, a.stderr_tail,
     CASE WHEN a.state IN ",
    crate::live_attempt!(),
    " THEN a.healthy END AS healthy,
     CASE WHEN a.state IN ",
    crate::live_attempt!(),
    " THEN a.health_message END AS health_message,
     CASE WHEN a.state = 'running' THEN a.in_backoff END AS in_backoff"
);

pub(crate) fn usage(cpu: Option<i64>, memory: Option<i64>) -> Option<ResourceUsage> {
    Some(ResourceUsage {
        cpu: MilliCpu(cpu?.max(0) as u64),
        memory: Bytes(memory?.max(0) as u64),
    })
}

fn superseded(
    attempt: Option<AttemptId>,
    version: Option<i32>,
    machine: Option<String>,
    state: Option<TaskState>,
    stopping: Option<bool>,
) -> Option<SupersededView> {
    Some(SupersededView {
        attempt: attempt?,
        version: version?,
        machine: machine?,
        state: state?,
        stopping: stopping.unwrap_or(false),
    })
}

impl From<TaskRow> for TaskView {
    fn from(r: TaskRow) -> TaskView {
        let death = r
            .cause
            .as_deref()
            .and_then(DeathCause::parse)
            .map(|cause| DeathCertificate {
                cause,
                exit_code: r.exit_code,
                signal: r.signal,
                killed_by: r.killed_by,
                peak_memory: r.peak_memory.map(|b| Bytes(b.max(0) as u64)),
                stderr_tail: r.stderr_tail,
            });
        TaskView {
            usage: usage(r.cpu_used_milli, r.memory_used),
            death,
            index: r.index,
            state: r.state,
            reason: r.reason,
            machine: r.machine,
            attempt: r.attempt,
            version: r.version,
            runs: r.runs,
            pid: r.pid,
            exit_code: r.exit_code,
            signal: r.signal,
            restarts: r.restarts,
            last_exit: r.last_exit,
            updated_at: r.updated_at,
            healthy: r.healthy,
            health_message: r.health_message,
            backoff: r.in_backoff.unwrap_or(false),
            superseded: superseded(
                r.superseded_attempt,
                r.superseded_version,
                r.superseded_machine,
                r.superseded_state,
                r.superseded_stopping,
            ),
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
    pub port_first: i32,
    pub port_last: i32,
    pub last_heard: Option<DateTime<Utc>>,
    pub isolation: Option<String>,
    pub version: Option<String>,
    pub cpu_used_milli: Option<i64>,
    pub memory_used: Option<i64>,
}

pub(crate) fn capacity(cpu: i64, memory: i64, disk: i64) -> Capacity {
    Capacity {
        cpu: MilliCpu(cpu.max(0) as u64),
        memory: Bytes(memory.max(0) as u64),
        disk: Bytes(disk.max(0) as u64),
    }
}

impl MachineRow {
    pub fn into_view(self, usage: crate::Usage) -> MachineView {
        MachineView {
            id: self.id,
            name: self.name,
            address: self.address,
            state: self.state,
            labels: self.labels.0,
            capacity: capacity(self.cpu_milli, self.memory, self.disk),
            ports: borg_shared::wire::PortRange {
                first: u16::try_from(self.port_first).unwrap_or(0),
                last: u16::try_from(self.port_last).unwrap_or(0),
            },
            allocated: usage.used,
            tasks: usage.attempts,
            last_heard: self.last_heard,
            isolation: self.isolation.as_deref().and_then(IsolationMode::parse),
            version: self.version,
            usage: self::usage(self.cpu_used_milli, self.memory_used),
        }
    }
}

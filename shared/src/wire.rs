//! Wire formats: the REST API's bodies and the master→borglet sync protocol.

use crate::ids::{AttemptId, JobId, MachineId};
use crate::resources::{Bytes, MilliCpu};
use crate::spec::JobSpec;
use crate::states::{JobKind, JobState, MachineState, TaskState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// cpu, memory and disk together: a machine's capacity or a task's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    pub cpu: MilliCpu,
    pub memory: Bytes,
    pub disk: Bytes,
}

// ---------- REST: jobs ----------

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub name: String,
    pub kind: JobKind,
    pub state: JobState,
    pub owner: String,
    pub priority: i64,
    pub replicas: i64,
    /// The version of the spec its tasks should run (1 until the first update).
    #[serde(default = "first_version")]
    pub version: i32,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// How many tasks are in each state.
    pub task_counts: BTreeMap<TaskState, i64>,
    pub spec: JobSpec,
    /// One page of the tasks (by index), on `GET /v1/jobs/{name}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskView>>,
    /// More tasks follow: ask again with `tasks_after` set to this index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_next: Option<i32>,
    /// Recent state changes of this job's tasks (newest last); only on `GET /v1/jobs/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
}

fn first_version() -> i32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// More jobs follow: ask again with `after` set to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    pub index: i32,
    pub state: TaskState,
    /// Why the task is where it is: why pending, why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptId>,
    /// The job version the current attempt runs: a copy on an older version
    /// than the job's is stale (a rollout replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// Runs so far, across attempts.
    pub runs: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// In-place restarts of the current attempt (each also counts in `runs`).
    #[serde(default)]
    pub restarts: i32,
    /// How the run before the latest in-place restart ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// What the current attempt uses now (last sample the master kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
    /// How the current attempt ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub death: Option<DeathCertificate>,
    /// The current attempt's health as last reported (tasks with a health check):
    /// absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Why its last probe failed, while it has not passed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_message: Option<String>,
    /// Running, but its process exited and its borglet waits out a backoff
    /// before restarting it in place (shown `running/backoff`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backoff: bool,
    /// Its old attempt, still live beside the new one while a surging rollout
    /// brings that up (`update.max_surge`): no longer the task's attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<SupersededView>,
}

/// A task's superseded attempt: it runs an older version and stops once the
/// task is ready on the new one (or runs as the task's again on a rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SupersededView {
    pub attempt: AttemptId,
    pub version: i32,
    pub machine: String,
    pub state: TaskState,
    /// Asked to stop (its task is ready on the new version).
    pub stopping: bool,
}

/// What an attempt (or a machine's attempts together) uses: cpu as a rate
/// (millicores averaged over the last sample period) and resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceUsage {
    pub cpu: MilliCpu,
    pub memory: Bytes,
}

/// Why an attempt ended (DESIGN.md: the death certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeathCause {
    /// The process exited by itself with `exit_code`.
    Exited,
    /// A signal ended it (`signal`), not sent by borg.
    Signaled,
    /// The kernel killed it for going past its memory limit.
    OomKilled,
    /// Borg stopped it: `killed_by` says who asked.
    Killed,
    /// It never ran: the reason is the attempt's reason.
    FailedToStart,
}

impl DeathCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathCause::Exited => "exited",
            DeathCause::Signaled => "signaled",
            DeathCause::OomKilled => "oom-killed",
            DeathCause::Killed => "killed",
            DeathCause::FailedToStart => "failed-to-start",
        }
    }

    pub fn parse(s: &str) -> Option<DeathCause> {
        [
            DeathCause::Exited,
            DeathCause::Signaled,
            DeathCause::OomKilled,
            DeathCause::Killed,
            DeathCause::FailedToStart,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// How one attempt ended, kept with the attempt so it outlives the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeathCertificate {
    pub cause: DeathCause,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Who asked for the kill, when `cause` is `killed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<String>,
    /// Highest memory use of the attempt's cgroup (absent without isolation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory: Option<Bytes>,
    /// The last 4 KiB of its stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TaskState>,
    pub to: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// ---------- REST: machines ----------

/// `POST /v1/machines`: a borglet announces itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMachine {
    #[schema(schema_with = crate::spec::schema::name)]
    pub name: String,
    /// Base URL the master reaches the borglet at, e.g. `http://127.0.0.1:7701`.
    #[schema(schema_with = crate::spec::schema::address)]
    pub address: String,
    #[schema(schema_with = crate::spec::schema::machine_capacity)]
    pub capacity: Capacity,
    #[schema(schema_with = crate::spec::schema::labels)]
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How the borglet isolates tasks (absent from older borglets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationMode>,
    /// The borglet's version.
    #[schema(schema_with = crate::spec::schema::version)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Host ports tasks may be given (default 20000-29999); `last` is at least `first`.
    #[serde(default)]
    pub ports: PortRange,
}

/// The answer to `POST /v1/machines`: the machine, and the credential the
/// borglet is to keep when one was issued (a registration with the join token,
/// or an open `--insecure` master). Shown once: the master keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineRegistered {
    #[serde(flatten)]
    pub machine: MachineView,
    /// The machine's new credential: `Authorization: Bearer` on its calls to the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// How a borglet isolates its tasks: a cgroup v2 or v1 per attempt, or not at all
/// (no writable cgroup hierarchy, e.g. not root): limits are then not enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    V2,
    V1,
    None,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::V2 => "v2",
            IsolationMode::V1 => "v1",
            IsolationMode::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<IsolationMode> {
        [IsolationMode::V2, IsolationMode::V1, IsolationMode::None]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// An inclusive range of host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    #[schema(minimum = 1, maximum = 65535)]
    pub first: u16,
    #[schema(minimum = 1, maximum = 65535)]
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 20000,
            last: 29999,
        }
    }
}

impl PortRange {
    pub fn len(&self) -> usize {
        (self.last as usize + 1).saturating_sub(self.first as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `20000-29999`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a port range like 20000-29999");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineView {
    pub id: MachineId,
    pub name: String,
    pub address: String,
    pub state: MachineState,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// Host ports tasks here may be given.
    pub ports: PortRange,
    /// Sum of the requests of live attempts placed here.
    pub allocated: Capacity,
    pub tasks: i64,
    pub last_heard: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What its attempts use together, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineList {
    pub machines: Vec<MachineView>,
    /// More machines follow: ask again with `after` set to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

// ---------- master → borglet sync ----------

/// `POST /v1/sync`: the full set of attempts that should run on the machine.
/// Anything the borglet runs that is not listed gets stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The sending master's leadership epoch; a borglet refuses an older one than it has seen.
    pub epoch: i64,
    /// The machine the master believes it is talking to.
    pub machine: String,
    pub attempts: Vec<AttemptSpec>,
    /// Finished attempts whose final state the master has durably recorded: the borglet may forget them.
    #[serde(default)]
    pub ack: Vec<AttemptId>,
    /// Not sent any more: nudges carry the machine credential (see `agent`).
    /// Kept so that a borglet and master of different versions still parse each other.
    #[serde(default)]
    pub nudge_token: Option<String>,
}

/// What the borglet needs to run one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSpec {
    pub id: AttemptId,
    pub job: String,
    pub index: i32,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub resources: Capacity,
    pub kill_grace_ms: u64,
    /// Hard memory cap; the memory request when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<Bytes>,
    /// Hard cpu cap; none (burst freely) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<MilliCpu>,
    /// Host ports picked for this attempt, given to it as `BORG_PORT0`, `BORG_PORT1`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// How the borglet restarts the task in place when its process exits;
    /// absent: never (the master makes a new attempt instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<InPlaceRestart>,
    /// The task's health check, ports resolved; absent: not probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthProbe>,
    /// The spec's `task.fence_after`: the borglet kills the task when no
    /// accepted sync has come for this long. Absent: it keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_after_ms: Option<u64>,
}

impl AttemptSpec {
    /// The same, probed as `check` says (its port indexes resolved to `ports`).
    pub fn with_health(mut self, check: Option<&crate::spec::HealthCheck>) -> Self {
        self.health = check.and_then(|h| h.resolve(&self.ports));
        self
    }
}

/// What a borglet probes for one attempt (from the spec's `task.health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub probe: ProbeKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Failed probes in a row that restart the task in place.
    pub failures: u32,
    /// Wait after each start of the task before the first probe.
    pub initial_delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `GET http://127.0.0.1:{port}{path}`, healthy on 2xx/3xx.
    Http { port: u16, path: String },
    /// A connect to `127.0.0.1:{port}`.
    Tcp { port: u16 },
    /// Run in the task's sandbox, environment and cgroup; healthy on exit 0.
    Exec { command: Vec<String> },
}

/// In-place restarts of one attempt (DESIGN.md: same attempt, `restarts` counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceRestart {
    /// Restarts this attempt may make: the job's run budget left when the attempt
    /// began (a batch task: `restart.max_attempts` counts every run). `None`:
    /// without limit (a service), but a service that keeps failing is handed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// The first wait before a restart; it doubles with each one, up to 5 min.
    pub backoff_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    pub machine: String,
    /// Every attempt the borglet knows: running, stopping, or finished and not yet acked.
    pub attempts: Vec<AttemptReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptPhase {
    Running,
    /// Asked to stop (SIGTERM sent), not yet exited.
    Stopping,
    Exited,
    /// The process could not be started (no such program, bad sandbox, ...).
    FailedToStart,
    /// The process exited and the borglet restarts it in place after a backoff.
    Backoff,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptReport {
    pub id: AttemptId,
    pub phase: AttemptPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit status when `phase` is `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// True when the borglet stopped it because it was no longer wanted.
    #[serde(default)]
    pub stopped_by_borglet: bool,
    /// Human detail, e.g. why it failed to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// In-place restarts so far (each one a run of the task).
    #[serde(default)]
    pub restarts: u32,
    /// How the run before the latest restart ended, e.g. `exited with code 3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The kernel OOM-killed a process of the attempt (its cgroup counted an oom kill).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// Highest memory use of the attempt's cgroup, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory: Option<Bytes>,
    /// The last 4 KiB of stderr, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// Latest usage sample while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
    /// The current run's health: `None` while unknown (no check, or no probe
    /// has decided yet since it started); `Some(false)` once it failed
    /// `failures` probes in a row (it is then restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Why the last probe failed, while it has not passed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_message: Option<String>,
}

/// Query of the log endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    #[default]
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn file_name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// The environment variables every task gets (DESIGN.md).
pub fn borg_env(spec: &AttemptSpec, machine: &str) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    env.insert("BORG_JOB".into(), spec.job.clone());
    env.insert("BORG_TASK_INDEX".into(), spec.index.to_string());
    env.insert("BORG_ATTEMPT".into(), spec.id.to_string());
    env.insert("BORG_MACHINE".into(), machine.to_string());
    for (i, port) in spec.ports.iter().enumerate() {
        env.insert(format!("BORG_PORT{i}"), port.to_string());
    }
    env
}

impl Capacity {
    /// Does `self` (a request) fit in `free` on every dimension?
    pub fn fits_in(&self, free: &Capacity) -> bool {
        self.cpu <= free.cpu && self.memory <= free.memory && self.disk <= free.disk
    }

    /// `self - other` per dimension, floored at zero.
    pub fn saturating_sub(&self, other: &Capacity) -> Capacity {
        Capacity {
            cpu: MilliCpu(self.cpu.0.saturating_sub(other.cpu.0)),
            memory: Bytes(self.memory.0.saturating_sub(other.memory.0)),
            disk: Bytes(self.disk.0.saturating_sub(other.disk.0)),
        }
    }

    /// `self + other` per dimension.
    pub fn saturating_add(&self, other: &Capacity) -> Capacity {
        Capacity {
            cpu: MilliCpu(self.cpu.0.saturating_add(other.cpu.0)),
            memory: Bytes(self.memory.0.saturating_add(other.memory.0)),
            disk: Bytes(self.disk.0.saturating_add(other.disk.0)),
        }
    }
}

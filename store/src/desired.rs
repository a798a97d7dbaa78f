//! Desired sets: the attempts each machine should run, as the poller sends
//! them to its borglet, read for one machine or for many in one query.

use crate::reports::DEFAULT_BACKOFF;
use crate::{live_attempt, Store};
use borg_shared::spec::TaskTemplate;
use borg_shared::wire::{AttemptSpec, Capacity, InPlaceRestart};
use borg_shared::{AttemptId, Bytes, JobId, JobKind, MachineId, MilliCpu, TaskState};
use sqlx::types::Json;
use std::collections::HashMap;

#[derive(sqlx::FromRow)]
struct DesiredRow {
    machine_id: MachineId,
    id: AttemptId,
    state: TaskState,
    job_id: JobId,
    job: String,
    index: i32,
    cpu_milli: i64,
    memory: i64,
    disk: i64,
    kind: JobKind,
    /// Runs of the task so far, this attempt's included.
    runs: i32,
    max_runs: i32,
    restarts: i32,
    ports: Vec<i32>,
    /// The job version this attempt runs: its template comes from that version.
    version: i32,
}

impl DesiredRow {
    /// How the borglet restarts this attempt in place: a service without limit;
    /// a batch task within the runs its budget had left when the attempt began
    /// (`runs` grows with each restart the borglet reports, so it is taken back
    /// out: the figure stays the same for the attempt's whole life).
    fn restart(&self, task: &TaskTemplate) -> InPlaceRestart {
        let max_restarts = match self.kind {
            JobKind::Service => None,
            JobKind::Batch => {
                let runs_at_start = self.runs - self.restarts;
                Some(u32::try_from(self.max_runs - runs_at_start).unwrap_or(0))
            }
        };
        let backoff = task
            .restart
            .as_ref()
            .and_then(|r| r.backoff)
            .unwrap_or(DEFAULT_BACKOFF);
        InPlaceRestart {
            max_restarts,
            backoff_ms: backoff.as_millis() as u64,
        }
    }
}

/// What one machine should run: its attempts, and which of them its borglet
/// has not been told about yet (`assigned`).
#[derive(Debug, Clone, Default)]
pub struct DesiredSet {
    pub attempts: Vec<AttemptSpec>,
    pub new: Vec<AttemptId>,
}

impl Store {
    /// The attempts that should run on a machine now, and which of them the
    /// borglet has not been told about yet (`assigned`).
    pub async fn desired_attempts(
        &self,
        machine: MachineId,
    ) -> crate::Result<(Vec<AttemptSpec>, Vec<AttemptId>)> {
        let mut sets = self.desired_attempts_of(&[machine]).await?;
        let set = sets.remove(&machine).unwrap_or_default();
        Ok((set.attempts, set.new))
    }

    /// [`Store::desired_attempts`] of many machines in two queries (the
    /// attempts, then each job version's task template once); a machine
    /// without live attempts has an empty set.
    pub async fn desired_attempts_of(
        &self,
        machines: &[MachineId],
    ) -> crate::Result<HashMap<MachineId, DesiredSet>> {
        let rows: Vec<DesiredRow> = sqlx::query_as(concat!(
            "SELECT a.machine_id, a.id, a.state, t.job_id, j.name AS job, t.index, a.cpu_milli, a.memory,
                    a.disk, j.kind, t.runs, t.max_runs, a.restarts, a.ports, a.version
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
             WHERE a.machine_id = ANY($1) AND a.state IN ",
            live_attempt!(),
            " AND a.stop_reason IS NULL
             ORDER BY a.created_at"
        ))
        .bind(machines)
        .fetch_all(&self.pool)
        .await?;
        // Each version's task template is read and parsed once, not once per
        // attempt; a job written before versions existed has its spec as version 1.
        let mut versions: Vec<(JobId, i32)> = rows.iter().map(|r| (r.job_id, r.version)).collect();
        versions.sort();
        versions.dedup();
        let templates: HashMap<(JobId, i32), TaskTemplate> =
            sqlx::query_as::<_, (JobId, i32, Json<TaskTemplate>)>(
                "SELECT u.job_id, u.version, COALESCE(v.spec, j.spec)->'task'
                 FROM unnest($1::uuid[], $2::int[]) AS u(job_id, version)
                 JOIN jobs j ON j.id = u.job_id
                 LEFT JOIN job_versions v ON v.job_id = u.job_id AND v.version = u.version",
            )
            .bind(versions.iter().map(|(j, _)| j.0).collect::<Vec<_>>())
            .bind(versions.iter().map(|(_, v)| *v).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(id, version, t)| ((id, version), t.0))
            .collect();
        let mut sets: HashMap<MachineId, DesiredSet> = machines
            .iter()
            .map(|m| (*m, DesiredSet::default()))
            .collect();
        for r in rows {
            let Some(task) = templates.get(&(r.job_id, r.version)) else {
                tracing::warn!(job = %r.job, "a live attempt's job has no readable task template");
                continue;
            };
            let set = sets.entry(r.machine_id).or_default();
            if r.state == TaskState::Assigned {
                set.new.push(r.id);
            }
            set.attempts.push(
                AttemptSpec {
                    restart: Some(r.restart(task)),
                    id: r.id,
                    job: r.job,
                    index: r.index,
                    command: task.command.clone(),
                    env: task.env.clone(),
                    resources: Capacity {
                        cpu: MilliCpu(r.cpu_milli.max(0) as u64),
                        memory: Bytes(r.memory.max(0) as u64),
                        disk: Bytes(r.disk.max(0) as u64),
                    },
                    kill_grace_ms: task.kill_grace().as_millis() as u64,
                    memory_limit: task.resources.memory_limit,
                    cpu_limit: task.resources.cpu_limit,
                    ports: r
                        .ports
                        .iter()
                        .filter_map(|&p| u16::try_from(p).ok())
                        .collect(),
                    health: None,
                    fence_after_ms: task.fence_after.map(|d| d.as_millis() as u64),
                }
                .with_health(task.health.as_ref()),
            );
        }
        Ok(sets)
    }
}

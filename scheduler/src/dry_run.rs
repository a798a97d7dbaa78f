//! A placement that is never committed, for the master's `POST /v1/plan`: the
//! same snapshot a scheduler pass reads (machines up, their usage, ports,
//! quotas, what may be preempted) and the same pure `place()`, writing nothing.

use crate::place::{place, Decision};
use crate::snapshot::{
    capacity_from_db, read_job_counts, read_machines, read_quotas, read_used_ports, read_victims,
    PendingTask,
};
use anyhow::Context;
use borg_shared::quota::Band;
use borg_shared::{AttemptId, JobId, MachineId};
use sqlx::PgPool;
use std::collections::HashMap;

/// The decisions, with the names to show them by.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub decisions: Vec<Decision>,
    /// Every machine of the snapshot, by id.
    pub machines: HashMap<MachineId, String>,
    /// `JOB/INDEX` of each attempt that may be preempted.
    pub victims: HashMap<AttemptId, String>,
}

/// Decide `tasks` against the cell as it is now, with the default scoring.
/// `replacing`: a live job whose attempts the tasks would replace (a new
/// version rolls out in place): their room counts as free and they do not
/// count against the job's spread.
pub async fn dry_run(
    pool: &PgPool,
    tasks: &[PendingTask],
    replacing: Option<JobId>,
) -> anyhow::Result<DryRun> {
    let mut snapshot = read_machines(pool, true).await?;
    let mut jobs: Vec<JobId> = tasks.iter().map(|t| t.job_id).collect();
    jobs.sort();
    jobs.dedup();
    snapshot.job_counts = read_job_counts(pool, &jobs).await?;
    if tasks.iter().any(|t| t.ports > 0) {
        read_used_ports(pool, &mut snapshot).await?;
    }
    read_quotas(pool, &mut snapshot, tasks).await?;
    if tasks
        .iter()
        .any(|t| Band::of(i64::from(t.priority)) == Band::Production)
    {
        read_victims(pool, &mut snapshot).await?;
    }
    if let Some(job) = replacing {
        snapshot.job_counts.remove(&job);
        let held = read_job_holdings(pool, job).await?;
        for m in &mut snapshot.machines {
            if let Some(h) = held.get(&m.id) {
                m.used = m.used.saturating_sub(h);
            }
        }
        for list in snapshot.victims.values_mut() {
            list.retain(|v| !v.name.starts_with(&format!("{}/", job_name(tasks))));
        }
    }
    let decisions = place(&snapshot, tasks);
    Ok(DryRun {
        decisions,
        machines: snapshot
            .machines
            .iter()
            .map(|m| (m.id, m.name.clone()))
            .collect(),
        victims: snapshot
            .victims
            .values()
            .flatten()
            .map(|v| (v.attempt, v.name.clone()))
            .collect(),
    })
}

/// The job name of the tasks (`JOB` of their `JOB/INDEX`).
fn job_name(tasks: &[PendingTask]) -> &str {
    tasks
        .first()
        .and_then(|t| t.name.rsplit_once('/'))
        .map_or("", |(job, _)| job)
}

/// What a job's live attempts hold on each machine.
async fn read_job_holdings(
    pool: &PgPool,
    job: JobId,
) -> anyhow::Result<HashMap<MachineId, borg_shared::wire::Capacity>> {
    let rows: Vec<(MachineId, i64, i64, i64)> = sqlx::query_as(concat!(
        "SELECT a.machine_id, sum(a.cpu_milli)::bigint, sum(a.memory)::bigint, sum(a.disk)::bigint
         FROM attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.job_id = $1 AND a.state IN ",
        borg_store::live_attempt!(),
        " GROUP BY a.machine_id"
    ))
    .bind(job)
    .fetch_all(pool)
    .await
    .context("reading what the job holds")?;
    Ok(rows
        .into_iter()
        .map(|(m, cpu, memory, disk)| (m, capacity_from_db(cpu, memory, disk)))
        .collect())
}

//! What a walk keeps of the next page: read while the current one commits,
//! and placed meanwhile when nothing it needs depends on that commit; and the
//! charging of a page's placements to the snapshot before they commit.

use crate::place::{place, Decision};
use crate::slice::Slice;
use crate::snapshot::{read_quotas, read_victims, PendingPage, PendingTask, Snapshot};
use crate::Config;
use anyhow::Context;
use borg_shared::quota::Band;
use borg_shared::{JobId, MachineId, TaskId};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Instant;

/// The next page of a walk, read while the current one commits.
pub(super) struct Ahead {
    /// The slice of the queue it was read for.
    pub(super) slice: Slice,
    pub(super) page: PendingPage,
    /// Where its new jobs run: still to go into the snapshot, unless it was
    /// placed ahead (then they are in, and `jobs` says which).
    pub(super) counts: JobCounts,
    /// Its decisions, when it was placed while the current page committed.
    pub(super) placed: Option<Placed>,
}

/// Decisions made ahead, and the time placing took.
pub(super) struct Placed {
    pub(super) decisions: Vec<Decision>,
    pub(super) ms: u64,
}

/// Place the page read ahead while the current one commits, so that Postgres
/// is not idle while this process places (the current page's placements are
/// charged to the snapshot already). Not for a page that asks for host ports
/// (the ports in use are read from the rows, without the commit in flight) or
/// whose owners have quotas (likewise): `None`, and it is placed after the
/// commit. Placing runs on a blocking thread, so the commit's statements go on.
pub(super) async fn place_ahead(
    pool: &PgPool,
    snapshot: &mut Snapshot,
    ahead: &mut Ahead,
) -> anyhow::Result<Option<Placed>> {
    if ahead.page.tasks.iter().any(|t| t.ports > 0) {
        return Ok(None);
    }
    read_quotas_and_victims(pool, snapshot, &ahead.page.tasks).await?;
    if !snapshot.quotas.is_empty() {
        return Ok(None);
    }
    for job in &ahead.counts.jobs {
        let c = ahead.counts.counts.remove(job).unwrap_or_default();
        snapshot.job_counts.insert(*job, c);
    }
    let taken = std::mem::take(snapshot);
    let tasks = std::mem::take(&mut ahead.page.tasks);
    let (taken, tasks, placed) = tokio::task::spawn_blocking(move || {
        let clock = Instant::now();
        let decisions = place(&taken, &tasks);
        let ms = clock.elapsed().as_millis() as u64;
        (taken, tasks, Placed { decisions, ms })
    })
    .await
    .context("placing the next page")?;
    *snapshot = taken;
    ahead.page.tasks = tasks;
    Ok(Some(placed))
}

/// The quotas of the page's owners, and what production tasks may preempt
/// when the page holds one, read into `snapshot` (replacing the last page's).
pub(super) async fn read_quotas_and_victims(
    pool: &PgPool,
    snapshot: &mut Snapshot,
    tasks: &[PendingTask],
) -> anyhow::Result<()> {
    snapshot.quotas.clear();
    snapshot.quota_used.clear();
    read_quotas(pool, snapshot, tasks).await?;
    snapshot.victims.clear();
    snapshot.stopping.clear();
    if tasks
        .iter()
        .any(|t| Band::of(i64::from(t.priority)) == Band::Production)
    {
        read_victims(pool, snapshot).await?;
    }
    Ok(())
}

/// Whether `charge` adds placements or takes them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charge {
    Add,
    TakeBack,
}

/// Charge `placements` to the snapshot, or take them back: the machines'
/// usage and ports, and the counts of jobs that spread.
pub(super) fn charge(
    snapshot: &mut Snapshot,
    index: &HashMap<MachineId, usize>,
    tasks: &HashMap<TaskId, &PendingTask>,
    placements: &[(TaskId, MachineId, Vec<u16>)],
    how: Charge,
) {
    for (task, machine, ports) in placements {
        let (Some(&i), Some(t)) = (index.get(machine), tasks.get(task)) else {
            continue;
        };
        let m = &mut snapshot.machines[i];
        let on = snapshot.job_counts.get_mut(&t.job_id);
        if how == Charge::Add {
            m.used = m.used.saturating_add(&t.request);
            m.used_ports.extend(ports.iter().copied());
            if let Some(on) = on {
                *on.entry(*machine).or_insert(0) += 1;
            }
        } else {
            m.used = m.used.saturating_sub(&t.request);
            m.used_ports.retain(|p| !ports.contains(p));
            if let Some(n) = on.and_then(|on| on.get_mut(machine)) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Where `jobs` run, as read.
pub(super) struct JobCounts {
    pub(super) jobs: Vec<JobId>,
    pub(super) counts: HashMap<JobId, HashMap<MachineId, u32>>,
}

/// The jobs of `tasks` whose placements look at where the job already runs
/// and whose counts `snapshot` does not hold yet (sorted).
pub(super) fn new_spreading_jobs(
    tasks: &[PendingTask],
    snapshot: &Snapshot,
    config: &Config,
) -> Vec<JobId> {
    let mut jobs: Vec<JobId> = tasks
        .iter()
        .filter(|t| t.spread.is_some() || config.scoring.spreads_jobs())
        .map(|t| t.job_id)
        .filter(|j| !snapshot.job_counts.contains_key(j))
        .collect();
    jobs.sort();
    jobs.dedup();
    jobs
}

//! Turning a scheduler's batch of decisions into rows, safely against other
//! schedulers.
//!
//! The snapshot the scheduler placed from may be stale, and another scheduler
//! may be committing onto the same machines right now. So one transaction per
//! batch: lock the machine rows (in id order, so schedulers never deadlock; NO
//! KEY UPDATE, so inserts that merely reference a machine never wait),
//! recompute their usage from live attempts, keep only what still fits, hold
//! the tasks' jobs live (FOR SHARE: a job ending now waits for this batch, and
//! this batch sees it ended), claim the tasks still pending (`SKIP LOCKED`: a
//! task another scheduler holds is simply lost this round), then write the
//! attempts and the task moves. Whatever is dropped stays pending and is
//! retried on the next pass.

use crate::machines::machine_usage;
use crate::moves::{move_tasks, TaskMove, Transitions};
use crate::rows::capacity;
use crate::{live_job, Store, CHANNEL_PLACED};
use borg_shared::quota::Band;
use borg_shared::wire::Capacity;
use borg_shared::{AttemptId, JobId, MachineId, TaskId, TaskState};
use std::collections::{HashMap, HashSet};

/// How long a pending task's reason stands before a changed one replaces it.
pub const REASON_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// The claim of a batch's tasks: those still pending with the request the
/// scheduler accounted for, not locked by another (never wait on another
/// scheduler). `$1..$4`: task ids and their cpu, memory and disk. Run under
/// `plan_cache_mode = force_custom_plan` (see `commit_placements`): a generic
/// plan guesses 10 rows for the `unnest` and walks the tasks the wrong way
/// round; `scheduler/tests/plans.rs` checks the plan with `EXPLAIN`.
/// Besides the id, how long each task has waited: since it became pending
/// (`pending_since`: its creation, or its last move back to pending), or since
/// its backoff ended.
pub const CLAIM_TASKS: &str = "SELECT t.id,
            extract(epoch FROM now() - GREATEST(t.not_before,
                COALESCE(t.pending_since, t.created_at)))::float8 AS waited
     FROM tasks t
     JOIN unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[])
         AS u(task_id, cpu_milli, memory, disk) ON u.task_id = t.id
     WHERE t.state = 'pending'
       AND t.cpu_milli = u.cpu_milli AND t.memory = u.memory AND t.disk = u.disk
       AND (t.not_before IS NULL OR t.not_before <= now())
     ORDER BY t.id
     FOR UPDATE OF t SKIP LOCKED";

/// Run by the commit before its claim, for the rest of its transaction (the
/// claim, the attempts' insert and `MOVE_TASKS`): the claim and the move each
/// join a batch's array with `tasks` and nothing else (the insert joins
/// nothing), and must reach the batch's rows through the primary key. Left to
/// its costs the planner prefers a hash or merge join that reads every task (a
/// batch of 4,000 is a few percent of a 100,000-task table): at 100,000 tasks,
/// under `EXPLAIN ANALYZE`, that scan and hash took ~90 ms of a ~330 ms move
/// and ~110 ms of a ~150 ms claim, per batch, and it grows with the table
/// (finished tasks included), not with the batch.
/// `scheduler/tests/plans.rs` checks both plans with `EXPLAIN`.
pub const KEYED_JOINS: &str = "SELECT set_config('enable_hashjoin', 'off', true),
            set_config('enable_mergejoin', 'off', true)";

/// One decision of a scheduler: this task on this machine, with the request
/// the scheduler accounted for.
#[derive(Debug, Clone)]
pub struct Placement {
    pub task: TaskId,
    pub job: JobId,
    pub machine: MachineId,
    pub request: Capacity,
    /// The job's `spread.max_per_machine`, re-checked under the machine's lock.
    pub max_per_machine: Option<u32>,
    /// Host ports picked from the machine's range; re-checked under its lock.
    pub ports: Vec<u16>,
}

/// One placement as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub task: TaskId,
    pub job: JobId,
    pub attempt: AttemptId,
    pub machine: MachineId,
    pub ports: Vec<u16>,
    /// How long the task waited to be placed (see `CLAIM_TASKS`).
    pub waited: std::time::Duration,
}

/// Which of `streams` concurrent commits a placement on `machine` belongs to.
/// Batches of different streams lock disjoint machines and upsert disjoint job
/// counter shards (the shard is a function of the machine), so they commit side
/// by side without waiting on each other; the quota rows, when a batch needs
/// them, are the one thing they may queue on (locked in key order: no deadlock).
pub fn commit_stream(machine: MachineId, streams: usize) -> usize {
    crate::moves::shard(Some(machine)) as usize % streams.max(1)
}

#[derive(Debug, Default)]
pub struct Committed {
    pub placed: Vec<Placed>,
    /// Decisions dropped because the machine filled up, left `up`, or the task
    /// was claimed, changed or killed meanwhile.
    pub lost_races: usize,
}

/// Live attempts per (job, machine) of the jobs in `placements` that cap their
/// tasks per machine, on the (locked) `machines`.
async fn job_counts_on(
    tx: &mut sqlx::PgConnection,
    placements: &[Placement],
    machines: &[MachineId],
) -> crate::Result<HashMap<(JobId, MachineId), i64>> {
    let mut jobs: Vec<JobId> = placements
        .iter()
        .filter(|p| p.max_per_machine.is_some())
        .map(|p| p.job)
        .collect();
    if jobs.is_empty() {
        return Ok(HashMap::new());
    }
    jobs.sort();
    jobs.dedup();
    let rows: Vec<(JobId, MachineId, i64)> = sqlx::query_as(concat!(
        "SELECT t.job_id, a.machine_id, count(*)
         FROM attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.job_id = ANY($1) AND a.machine_id = ANY($2) AND a.state IN ",
        crate::live_attempt!(),
        " GROUP BY 1, 2"
    ))
    .bind(&jobs)
    .bind(machines)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(j, m, n)| ((j, m), n)).collect())
}

/// The ports live attempts hold on the (locked) `machines`, when the batch
/// asks for any.
async fn ports_on(
    tx: &mut sqlx::PgConnection,
    placements: &[Placement],
    machines: &[MachineId],
) -> crate::Result<HashMap<MachineId, HashSet<u16>>> {
    if placements.iter().all(|p| p.ports.is_empty()) {
        return Ok(HashMap::new());
    }
    let rows: Vec<(MachineId, i32)> = sqlx::query_as(concat!(
        "SELECT a.machine_id, p FROM attempts a, unnest(a.ports) AS p
         WHERE a.machine_id = ANY($1) AND a.ports <> '{}' AND a.state IN ",
        crate::live_attempt!()
    ))
    .bind(machines)
    .fetch_all(&mut *tx)
    .await?;
    let mut taken: HashMap<MachineId, HashSet<u16>> = HashMap::new();
    for (machine, port) in rows {
        if let Ok(port) = u16::try_from(port) {
            taken.entry(machine).or_default().insert(port);
        }
    }
    Ok(taken)
}

/// Keep the placements (in order) that fit their owner's quota for their band,
/// with the quota rows locked (lock order: machines, quotas, jobs) and the
/// usage read under that lock. Jobs whose owner and band have no quota pass.
async fn within_quota<'p>(
    tx: &mut sqlx::PgConnection,
    kept: Vec<&'p Placement>,
) -> crate::Result<Vec<&'p Placement>> {
    let mut jobs: Vec<JobId> = kept.iter().map(|p| p.job).collect();
    jobs.sort();
    jobs.dedup();
    let limited: Vec<(JobId, String, String)> = sqlx::query_as(concat!(
        "SELECT j.id, j.owner, ",
        crate::band_of_job!(),
        " FROM jobs j JOIN quotas q ON q.owner = j.owner AND q.band = ",
        crate::band_of_job!(),
        " WHERE j.id = ANY($1)"
    ))
    .bind(&jobs)
    .fetch_all(&mut *tx)
    .await?;
    if limited.is_empty() {
        return Ok(kept);
    }
    let key_of: HashMap<JobId, (String, Band)> = limited
        .into_iter()
        .filter_map(|(job, owner, band)| Some((job, (owner, Band::parse(&band)?))))
        .collect();
    let mut keys: Vec<&(String, Band)> = key_of.values().collect();
    keys.sort();
    keys.dedup();
    let locked: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT owner, band, cpu_milli, memory FROM quotas
         WHERE (owner, band) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ORDER BY owner, band FOR UPDATE",
    )
    .bind(keys.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let limits: crate::QuotaTable = locked
        .into_iter()
        .filter_map(crate::quotas::quota_row)
        .collect();
    let mut owners: Vec<String> = keys.iter().map(|(o, _)| o.clone()).collect();
    owners.dedup();
    let mut used = crate::quota_usage(&mut *tx, &owners).await?;
    Ok(kept
        .into_iter()
        .filter(|p| {
            let Some(key) = key_of.get(&p.job) else {
                return true;
            };
            let Some(limit) = limits.get(key) else {
                return true; // the quota was removed meanwhile
            };
            let in_use = used.entry(key.clone()).or_default();
            if borg_shared::quota::over(limit, in_use, &p.request).is_some() {
                return false;
            }
            *in_use = in_use.saturating_add(&p.request);
            true
        })
        .collect())
}

impl Store {
    /// Commit `placements` (in queue order) made by scheduler `scheduler`.
    pub async fn commit_placements(
        &self,
        scheduler: &str,
        placements: &[Placement],
    ) -> crate::Result<Committed> {
        if placements.is_empty() {
            return Ok(Committed::default());
        }
        let mut machine_ids: Vec<MachineId> = placements.iter().map(|p| p.machine).collect();
        machine_ids.sort();
        machine_ids.dedup();

        let mut tx = crate::tx::begin(&self.pool).await?;
        // Every statement below is planned for its arrays (a custom plan),
        // whatever the connection's cached plans would otherwise settle on.
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await?;
        type Locked = (MachineId, String, i64, i64, i64, i32, i32);
        let locked: Vec<Locked> = sqlx::query_as(
            "SELECT id, name, cpu_milli, memory, disk, port_first, port_last FROM machines
             WHERE id = ANY($1) AND state = 'up'
             ORDER BY id
             FOR NO KEY UPDATE",
        )
        .bind(&machine_ids)
        .fetch_all(&mut *tx)
        .await?;
        // With the rows locked, every other scheduler's commit onto these
        // machines is either fully visible here or waits for us.
        let usage = machine_usage(&mut *tx, Some(&machine_ids)).await?;
        struct Room {
            name: String,
            capacity: Capacity,
            used: Capacity,
            ports: (i32, i32),
        }
        let mut room: HashMap<MachineId, Room> = locked
            .into_iter()
            .map(|(id, name, cpu, memory, disk, port_first, port_last)| {
                let used = usage.get(&id).map(|u| u.used).unwrap_or_default();
                let capacity = capacity(cpu, memory, disk);
                (
                    id,
                    Room {
                        name,
                        capacity,
                        used,
                        ports: (port_first, port_last),
                    },
                )
            })
            .collect();

        let mut per_machine = job_counts_on(&mut tx, placements, &machine_ids).await?;
        let mut ports_taken = ports_on(&mut tx, placements, &machine_ids).await?;

        let mut lost_races = 0;
        let mut kept: Vec<&Placement> = Vec::with_capacity(placements.len());
        for p in placements {
            let below_max = match p.max_per_machine {
                None => true,
                Some(max) => {
                    let n = per_machine.entry((p.job, p.machine)).or_insert(0);
                    *n < i64::from(max)
                }
            };
            let ports_free = p.ports.iter().all(|port| {
                ports_taken
                    .get(&p.machine)
                    .is_none_or(|taken| !taken.contains(port))
            }) && room.get(&p.machine).is_some_and(|r| {
                p.ports
                    .iter()
                    .all(|&port| (r.ports.0..=r.ports.1).contains(&i32::from(port)))
            });
            let fits_still = below_max
                && ports_free
                && room.get_mut(&p.machine).is_some_and(|r| {
                    let after = r.used.saturating_add(&p.request);
                    let ok = after.fits_in(&r.capacity);
                    if ok {
                        r.used = after;
                    }
                    ok
                });
            if fits_still && p.max_per_machine.is_some() {
                *per_machine.entry((p.job, p.machine)).or_insert(0) += 1;
            }
            if fits_still && !p.ports.is_empty() {
                ports_taken
                    .entry(p.machine)
                    .or_default()
                    .extend(p.ports.iter().copied());
            }
            if fits_still {
                kept.push(p);
            } else {
                lost_races += 1;
            }
        }
        let before_quota = kept.len();
        let kept = within_quota(&mut tx, kept).await?;
        lost_races += before_quota - kept.len();
        if kept.is_empty() {
            tx.rollback().await.ok();
            return Ok(Committed {
                placed: vec![],
                lost_races,
            });
        }

        let mut jobs: Vec<JobId> = kept.iter().map(|p| p.job).collect();
        jobs.sort();
        jobs.dedup();
        // With each live job's version: what its new attempts run (see rollout/).
        let live: Vec<(JobId, i32)> = sqlx::query_as(concat!(
            "SELECT id, version FROM jobs WHERE id = ANY($1) AND state IN ",
            live_job!(),
            " ORDER BY id FOR SHARE"
        ))
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await?;
        let live: HashMap<JobId, i32> = live.into_iter().collect();

        // Claim only tasks still pending with the request we accounted for, and
        // not locked by someone else (never wait on another scheduler).
        let candidates: Vec<&Placement> = kept
            .iter()
            .copied()
            .filter(|p| live.contains_key(&p.job))
            .collect();
        let dim = |f: fn(&Capacity) -> u64| -> Vec<i64> {
            candidates.iter().map(|p| f(&p.request) as i64).collect()
        };
        sqlx::query(KEYED_JOINS).execute(&mut *tx).await?;
        let claimed: Vec<(TaskId, f64)> = sqlx::query_as(CLAIM_TASKS)
            .bind(candidates.iter().map(|p| p.task).collect::<Vec<_>>())
            .bind(dim(|c| c.cpu.0))
            .bind(dim(|c| c.memory.0))
            .bind(dim(|c| c.disk.0))
            .fetch_all(&mut *tx)
            .await?;
        let claimed: HashMap<TaskId, f64> = claimed.into_iter().collect();
        // Each placement with the request the claim matched and its job's version.
        let placed: Vec<(Placed, Capacity, i32)> = candidates
            .iter()
            .filter_map(|p| Some((p, *claimed.get(&p.task)?, *live.get(&p.job)?)))
            .map(|(p, waited, version)| {
                let placed = Placed {
                    waited: std::time::Duration::try_from_secs_f64(waited).unwrap_or_default(),
                    task: p.task,
                    job: p.job,
                    attempt: AttemptId::new(),
                    machine: p.machine,
                    ports: p.ports.clone(),
                };
                (placed, p.request, version)
            })
            .collect();
        lost_races += kept.len() - placed.len();
        if placed.is_empty() {
            tx.rollback().await.ok();
            return Ok(Committed {
                placed: vec![],
                lost_races,
            });
        }

        // The attempts, and the wake-up of each machine's sync loop (delivered at
        // commit, so the master never syncs a machine before the rows exist).
        // Written from the batch's arrays: the claim matched each task's request
        // and the job's version is read under its lock above.
        let col = |f: fn(&Placed) -> uuid::Uuid| -> Vec<uuid::Uuid> {
            placed.iter().map(|(p, _, _)| f(p)).collect()
        };
        let dim = |f: fn(&Capacity) -> u64| -> Vec<i64> {
            placed.iter().map(|(_, r, _)| f(r) as i64).collect()
        };
        sqlx::query(
            "WITH a AS (
                 INSERT INTO attempts (id, task_id, machine_id, state, cpu_milli, memory, disk, ports,
                                       version)
                 SELECT a.id, a.task_id, a.machine_id, 'assigned', a.cpu_milli, a.memory, a.disk,
                        COALESCE(string_to_array(NULLIF(a.ports, ''), ',')::integer[], '{}'),
                        a.version
                 FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $5::text[], $6::bigint[],
                             $7::bigint[], $8::bigint[], $9::integer[])
                     AS a(id, task_id, machine_id, ports, cpu_milli, memory, disk, version)
                 RETURNING machine_id)
             SELECT pg_notify($4, m.machine_id::text) FROM (SELECT DISTINCT machine_id FROM a) m",
        )
        .bind(col(|p| p.attempt.0))
        .bind(col(|p| p.task.0))
        .bind(col(|p| p.machine.0))
        .bind(CHANNEL_PLACED)
        .bind(
            placed
                .iter()
                .map(|(p, _, _)| {
                    let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
                    ports.join(",")
                })
                .collect::<Vec<String>>(),
        )
        .bind(dim(|c| c.cpu.0))
        .bind(dim(|c| c.memory.0))
        .bind(dim(|c| c.disk.0))
        .bind(placed.iter().map(|(_, _, v)| *v).collect::<Vec<i32>>())
        .execute(&mut *tx)
        .await?;
        let placed: Vec<Placed> = placed.into_iter().map(|(p, _, _)| p).collect();

        let moves: Vec<TaskMove> = placed
            .iter()
            .map(|p| TaskMove {
                job: p.job,
                task: p.task,
                attempt: Some(p.attempt),
                machine: Some(p.machine),
                from: TaskState::Pending,
                to: TaskState::Assigned,
                reason: format!("placed on {} by {scheduler}", room[&p.machine].name),
                backoff: None,
                placed: true,
                failed_runs: None,
            })
            .collect();
        let mut moved = Transitions::default();
        move_tasks(&mut tx, &moves, &mut moved).await?;

        tx.commit().await?;
        moved.emit();
        for p in &placed {
            metrics::histogram!("borg_task_submit_to_placed_seconds")
                .record(p.waited.as_secs_f64());
        }
        Ok(Committed { placed, lost_races })
    }

    /// Record why each task stays pending; only rows whose reason changes are
    /// written, and rows another transaction holds are skipped (they are
    /// rewritten next pass). Not a state change: no event.
    pub async fn write_pending_reasons(&self, reasons: &[(TaskId, String)]) -> crate::Result<u64> {
        if reasons.is_empty() {
            return Ok(0);
        }
        let ids: Vec<TaskId> = reasons.iter().map(|(t, _)| *t).collect();
        let texts: Vec<&str> = reasons.iter().map(|(_, r)| r.as_str()).collect();
        let done = sqlx::query(
            "WITH u AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(id, reason)
             ), changed AS (
                 SELECT t.id FROM tasks t JOIN u ON u.id = t.id
                 WHERE t.state = 'pending' AND t.reason IS DISTINCT FROM u.reason
                   AND (t.reason IS NULL OR t.updated_at < now() - $3 * interval '1 millisecond')
                 ORDER BY t.id
                 FOR UPDATE OF t SKIP LOCKED
             )
             UPDATE tasks t SET reason = u.reason, updated_at = now()
             FROM u
             WHERE t.id = u.id AND t.id IN (SELECT id FROM changed)",
        )
        .bind(&ids)
        .bind(&texts)
        .bind(REASON_REFRESH.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Record why these jobs' tasks wait (`job_waits`): every pending task of
    /// a job with no reason of its own shows its job's (`task_reason`). The
    /// scheduler judges a job's tasks as one (they ask for the same), so one row
    /// per job stands for all of them. A changed reason replaces the old one
    /// only after `REASON_REFRESH`; `judged_at` is now either way, which
    /// explains the tasks that began to wait since the last judgment.
    pub async fn explain_waiting_jobs(&self, reasons: &[(JobId, String)]) -> crate::Result<u64> {
        if reasons.is_empty() {
            return Ok(0);
        }
        let mut sorted: Vec<&(JobId, String)> = reasons.iter().collect();
        // Key order: concurrent writers (two schedulers) never deadlock.
        sorted.sort_by_key(|(j, _)| *j);
        sorted.dedup_by_key(|(j, _)| *j);
        let done = sqlx::query(
            "INSERT INTO job_waits AS w (job_id, reason)
             SELECT u.job_id, u.reason FROM unnest($1::uuid[], $2::text[]) AS u(job_id, reason)
             WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.id = u.job_id)
             ON CONFLICT (job_id) DO UPDATE SET
                 reason = CASE WHEN w.reason_at < now() - $3 * interval '1 millisecond'
                               THEN EXCLUDED.reason ELSE w.reason END,
                 reason_at = CASE WHEN w.reason <> EXCLUDED.reason
                                   AND w.reason_at < now() - $3 * interval '1 millisecond'
                                  THEN now() ELSE w.reason_at END,
                 judged_at = now()",
        )
        .bind(sorted.iter().map(|(j, _)| *j).collect::<Vec<_>>())
        .bind(sorted.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>())
        .bind(REASON_REFRESH.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

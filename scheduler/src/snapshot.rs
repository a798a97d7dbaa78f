//! What the scheduler knows at the start of a batch: every `up` machine with the
//! resources its live attempts hold, and a page of the pending queue. Read
//! without locks; `commit` re-checks everything it relies on.

use anyhow::Context;
use borg_shared::spec::{Constraint, Spread};
use borg_shared::wire::{Capacity, PortRange};
use borg_shared::{AttemptId, Bytes, JobId, MachineId, MilliCpu, TaskId};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

mod pending;
pub use pending::{pending_page_sql, read_pending, PendingPage, QueueKey, WALK_IN_QUEUE_ORDER};

/// The machines a batch may place on.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Only machines in state `up`.
    pub machines: Vec<Machine>,
    /// Live attempts per machine of each job in the page that has a `spread`
    /// (what `max_per_machine` and the spread label count).
    pub job_counts: HashMap<JobId, HashMap<MachineId, u32>>,
    /// Quotas of the page's owners that have one, by (owner, band).
    pub quotas: borg_store::QuotaTable,
    /// What those owners' live attempts hold, by (owner, band).
    pub quota_used: borg_store::QuotaUsage,
    /// Live lower-band attempts not asked to stop, per machine: what a
    /// production task may preempt (read only when the page holds one).
    pub victims: HashMap<MachineId, Vec<Victim>>,
    /// Requests of live attempts already asked to stop, per machine: room
    /// being released.
    pub stopping: HashMap<MachineId, Capacity>,
    /// How feasible machines are ranked.
    pub scoring: crate::Scoring,
    /// Score at most this many feasible machines per task, walked from a
    /// place of the task's own (relaxed randomization); 0 scores them all.
    pub sample: usize,
    /// This scheduler's share of the machines (see `Slice::is_home`): a task
    /// goes to one of them when one can take it, else anywhere.
    pub home: crate::slice::Slice,
}

impl Snapshot {
    /// Each machine's position in `machines`, by id (with the hasher the
    /// caller picks).
    pub fn machine_index<S: std::hash::BuildHasher + Default>(
        &self,
    ) -> HashMap<MachineId, usize, S> {
        self.machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect()
    }
}

/// A live attempt a production task may preempt.
#[derive(Debug, Clone)]
pub struct Victim {
    pub attempt: AttemptId,
    pub priority: i32,
    pub request: Capacity,
    /// `JOB/INDEX`, for the reasons.
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub id: MachineId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// Sum of the requests of the live attempts (assigned, starting, running) here.
    pub used: Capacity,
    /// Host ports tasks here may be given.
    pub ports: PortRange,
    /// Ports live attempts hold here (read only when the page asks for ports).
    pub used_ports: Vec<u16>,
}

impl Machine {
    /// What is left; never negative even if the machine shrank under its attempts.
    pub fn free(&self) -> Capacity {
        sub(&self.capacity, &self.used)
    }
}

/// A task waiting for a machine.
#[derive(Debug, Clone)]
pub struct PendingTask {
    pub id: TaskId,
    pub job_id: JobId,
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    pub request: Capacity,
    /// The job's constraints, shared by all of its tasks.
    pub constraints: Arc<[Constraint]>,
    /// The job's spread rule, shared by all of its tasks.
    pub spread: Option<Arc<Spread>>,
    /// How many host ports it needs.
    pub ports: u16,
    /// The job's owner (quota is per owner and band).
    pub owner: Arc<str>,
    /// `JOB/INDEX`, for reasons that name it.
    pub name: String,
    /// The machine its last run failed on, when it waits to run again after
    /// a failure: taken only when no other machine fits.
    pub failed_on: Option<MachineId>,
    /// A service's task: under hybrid scoring it goes to a machine holding
    /// the fewest of its job's tasks before it packs (one machine's loss
    /// takes as few replicas as the cell allows); a batch task packs first.
    pub service: bool,
}

impl PendingTask {
    /// Queue order: higher priority first, then older, then by id so the order is total.
    pub fn queue_cmp(&self, other: &PendingTask) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.created_at.cmp(&other.created_at))
            .then(self.id.cmp(&other.id))
    }

    pub fn max_per_machine(&self) -> Option<u32> {
        self.spread.as_ref().and_then(|s| s.max_per_machine)
    }

    pub fn spread_label(&self) -> Option<&str> {
        self.spread.as_ref().and_then(|s| s.label.as_deref())
    }
}

/// Does `free` hold `request` on every dimension?
pub fn fits(request: &Capacity, free: &Capacity) -> bool {
    request.fits_in(free)
}

/// `a - b` per dimension, floored at zero.
pub fn sub(a: &Capacity, b: &Capacity) -> Capacity {
    a.saturating_sub(b)
}

/// Columns are BIGINT with `CHECK (>= 0)`; clamp anyway rather than wrap.
pub(crate) fn capacity_from_db(cpu: i64, memory: i64, disk: i64) -> Capacity {
    Capacity {
        cpu: MilliCpu(cpu.max(0) as u64),
        memory: Bytes(memory.max(0) as u64),
        disk: Bytes(disk.max(0) as u64),
    }
}

// ---------- reading ----------

#[derive(sqlx::FromRow)]
struct MachineRow {
    id: MachineId,
    name: String,
    labels: Json<serde_json::Value>,
    cpu_milli: i64,
    memory: i64,
    disk: i64,
    used_cpu: i64,
    used_memory: i64,
    used_disk: i64,
    port_first: i32,
    port_last: i32,
    up: bool,
}

impl MachineRow {
    fn into_machine(self) -> Machine {
        Machine {
            id: self.id,
            used: capacity_from_db(self.used_cpu, self.used_memory, self.used_disk),
            labels: labels_from_json(&self.name, self.labels.0),
            name: self.name,
            capacity: capacity_from_db(self.cpu_milli, self.memory, self.disk),
            ports: PortRange {
                first: u16::try_from(self.port_first).unwrap_or(0),
                last: u16::try_from(self.port_last).unwrap_or(0),
            },
            used_ports: Vec::new(),
        }
    }
}

/// `query`'s rows; with `settings` (a `set_config(…, true)` statement), planned
/// under them in a transaction of its own (three more round trips).
async fn fetch_all_under<'q, T>(
    pool: &PgPool,
    settings: Option<&str>,
    query: QueryAs<'q, Postgres, T, PgArguments>,
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    let Some(settings) = settings else {
        return query.fetch_all(pool).await;
    };
    let mut tx = borg_store::begin(pool).await?;
    sqlx::query(settings).execute(&mut *tx).await?;
    let rows = query.fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// The columns of a machine as the scheduler reads it, with its usage `u`.
const MACHINE_COLUMNS: &str = "m.id, m.name, m.labels, m.cpu_milli, m.memory, m.disk,
    COALESCE(u.cpu, 0) AS used_cpu, COALESCE(u.memory, 0) AS used_memory,
    COALESCE(u.disk, 0) AS used_disk, m.port_first, m.port_last, m.state = 'up' AS up";

/// The statement of [`read_machines`] (for `plans.rs`).
pub fn machines_full_read_sql() -> String {
    format!(
        "SELECT {MACHINE_COLUMNS}
         FROM machines m LEFT JOIN ({usage}) u ON u.machine_id = m.id
         WHERE m.state = 'up' ORDER BY m.name",
        usage = borg_store::sql::USAGE_BY_MACHINE
    )
}

/// The full read's setting (for its transaction): the machines and their
/// usage joined by hashing. Planned right after a burst of placements (before
/// autovacuum's next analyze of `attempts`), the read at times took ~1 s
/// instead of ~50 ms (10,000 machines, 100,000 attempts): the plan that walks
/// the machines in name order scans the whole usage aggregate again for each
/// (a nested loop). `scheduler/tests/plans.rs` checks it.
pub const HASH_THE_USAGE: &str = "SELECT set_config('enable_nestloop', 'off', true)";

/// Every `up` machine with its free capacity, ordered by name: one statement.
/// `many`: the cell may have many machines, so the statement runs under
/// [`HASH_THE_USAGE`] (a transaction of its own, three more round trips). A
/// cell under the cache's size (`--cache-machines`) reads every machine on
/// every pass, where those round trips would be half the read's cost and a
/// nested loop over a hundred machines costs nothing.
///
/// Not a prepared statement: one without parameters keeps the plan of its
/// first execution on that connection, with the statistics and the settings of
/// then. A scheduler's first read takes the small cell's way (its cache is
/// empty) while `attempts` may still be empty, and a later full read on the
/// same connection ran that nested loop after a burst whatever its own
/// settings said (1.3 s instead of ~50 ms, 1 run in 10 of `borg-schedbench
/// --schedulers 2`). Planned at each read, it costs a parse per pass.
pub async fn read_machines(pool: &PgPool, many: bool) -> anyhow::Result<Snapshot> {
    let sql = machines_full_read_sql();
    let query = sqlx::query_as(&sql).persistent(false);
    let rows: Vec<MachineRow> = fetch_all_under(pool, many.then_some(HASH_THE_USAGE), query)
        .await
        .context("reading machines")?;
    Ok(Snapshot {
        machines: rows.into_iter().map(MachineRow::into_machine).collect(),
        ..Snapshot::default()
    })
}

/// The machines `ids` as they are now, with their usage: `Some` for those
/// `up`, `None` for those in another state; a machine not there is left out.
pub async fn read_machines_in(
    pool: &PgPool,
    ids: &[MachineId],
) -> anyhow::Result<Vec<(MachineId, Option<Machine>)>> {
    let rows: Vec<MachineRow> = sqlx::query_as(&format!(
        "SELECT {MACHINE_COLUMNS}
         FROM machines m LEFT JOIN ({usage}) u ON u.machine_id = m.id
         WHERE m.id = ANY($1)",
        usage = borg_store::sql::USAGE_OF_MACHINES
    ))
    .bind(ids)
    .fetch_all(pool)
    .await
    .context("reading the changed machines")?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.up.then(|| r.into_machine())))
        .collect())
}

/// Labels are a JSON object of strings; a number or bool is matched by its text
/// so `{"rack": 3}` still satisfies `rack = 3`. Anything else is ignored.
fn labels_from_json(machine: &str, value: serde_json::Value) -> BTreeMap<String, String> {
    let serde_json::Value::Object(map) = value else {
        tracing::warn!(
            machine,
            "machine labels are not a JSON object; ignoring them"
        );
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            serde_json::Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect()
}

/// How many live attempts each job of `$1` has on each machine. The jobs'
/// tasks are looked up first and their attempts found through the attempts'
/// task index: joined by job, the planner hashes every live attempt of the
/// cell (a sequential scan of `attempts`, ~40 ms at 55,000 live attempts,
/// whatever the jobs hold; `scheduler/tests/plans.rs` checks the plan).
/// Only jobs ever placed are looked at: a placement counts its task on the
/// machine's counter shard (`job_counts.shard` 1..16, `store::moves`), so a
/// job whose counters are all on shard 0 has no attempt, and reading its
/// tasks one by one (every job of a fresh queue: 3.5% of Postgres's time in
/// `borg-schedbench`, all of it finding nothing) is skipped. Live tasks
/// counted on shard 0 (counters from before shards) keep a job in.
pub const JOB_COUNTS: &str = concat!(
    "SELECT t.job_id, a.machine_id, count(*)
     FROM attempts a JOIN tasks t ON t.id = a.task_id
     WHERE a.task_id = ANY(ARRAY(SELECT id FROM tasks WHERE job_id = ANY(ARRAY(
               SELECT DISTINCT c.job_id FROM job_counts c
               WHERE c.job_id = ANY($1)
                 AND (c.shard > 0 OR c.assigned + c.starting + c.running > 0)))))
       AND t.job_id = ANY($1) AND a.state IN ",
    borg_store::live_attempt!(),
    " GROUP BY 1, 2"
);

/// How many live attempts each of `jobs` has on each machine: one statement,
/// only for the jobs of a page that spread or limit their tasks per machine.
pub async fn read_job_counts(
    pool: &PgPool,
    jobs: &[JobId],
) -> anyhow::Result<HashMap<JobId, HashMap<MachineId, u32>>> {
    if jobs.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(JobId, MachineId, i64)> = sqlx::query_as(JOB_COUNTS)
        .bind(jobs)
        .fetch_all(pool)
        .await
        .context("reading where the spread jobs run")?;
    let mut counts: HashMap<JobId, HashMap<MachineId, u32>> = HashMap::new();
    for (job, machine, n) in rows {
        counts
            .entry(job)
            .or_default()
            .insert(machine, u32::try_from(n).unwrap_or(u32::MAX));
    }
    Ok(counts)
}

/// The ports live attempts hold, onto each machine of `snapshot`: one
/// statement, over the few attempts that hold any. Planned at each read, as
/// [`read_machines`] is: a statement without parameters keeps its first plan.
pub async fn read_used_ports(pool: &PgPool, snapshot: &mut Snapshot) -> anyhow::Result<()> {
    for m in &mut snapshot.machines {
        m.used_ports.clear();
    }
    let rows: Vec<(MachineId, Vec<i32>)> = sqlx::query_as(concat!(
        "SELECT a.machine_id, array_agg(p ORDER BY p) FROM attempts a, unnest(a.ports) AS p
         WHERE a.ports <> '{}' AND a.state IN ",
        borg_store::live_attempt!(),
        " GROUP BY a.machine_id"
    ))
    .persistent(false)
    .fetch_all(pool)
    .await
    .context("reading the ports in use")?;
    let mut by_machine: HashMap<MachineId, Vec<i32>> = rows.into_iter().collect();
    for m in &mut snapshot.machines {
        if let Some(ports) = by_machine.remove(&m.id) {
            m.used_ports = ports
                .into_iter()
                .filter_map(|p| u16::try_from(p).ok())
                .collect();
        }
    }
    Ok(())
}

/// The quotas of `page`'s owners and what they hold, onto `snapshot`: a read of
/// the (small) quota table, and the usage only when one of them has a quota.
pub async fn read_quotas(
    pool: &PgPool,
    snapshot: &mut Snapshot,
    page: &[PendingTask],
) -> anyhow::Result<()> {
    let mut quotas = borg_store::read_quotas(pool)
        .await
        .context("reading quotas")?;
    quotas.retain(|(owner, _), _| page.iter().any(|t| &*t.owner == owner.as_str()));
    if quotas.is_empty() {
        return Ok(());
    }
    let mut owners: Vec<String> = quotas.keys().map(|(o, _)| o.clone()).collect();
    owners.sort();
    owners.dedup();
    snapshot.quota_used = borg_store::quota_usage(pool, &owners)
        .await
        .context("reading quota usage")?;
    snapshot.quotas = quotas;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct LiveRow {
    attempt: AttemptId,
    machine_id: MachineId,
    priority: i32,
    cpu_milli: i64,
    memory: i64,
    disk: i64,
    job: String,
    index: i32,
    stopping: bool,
}

/// What preemption needs onto `snapshot`: every live attempt that is asked to
/// stop or is below the production band. One statement, read only for a page
/// that holds a production task. Planned at each read, as [`read_machines`] is.
pub async fn read_victims(pool: &PgPool, snapshot: &mut Snapshot) -> anyhow::Result<()> {
    let rows: Vec<LiveRow> = sqlx::query_as(concat!(
        "SELECT a.id AS attempt, a.machine_id, t.priority, a.cpu_milli, a.memory, a.disk,
                j.name AS job, t.index, a.stop_reason IS NOT NULL AS stopping
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
         WHERE a.state IN ",
        borg_store::live_attempt!(),
        " AND (a.stop_reason IS NOT NULL OR t.priority < 200)"
    ))
    .persistent(false)
    .fetch_all(pool)
    .await
    .context("reading what may be preempted")?;
    for r in rows {
        let request = capacity_from_db(r.cpu_milli, r.memory, r.disk);
        if r.stopping {
            let s = snapshot.stopping.entry(r.machine_id).or_default();
            *s = s.saturating_add(&request);
        } else {
            snapshot
                .victims
                .entry(r.machine_id)
                .or_default()
                .push(Victim {
                    attempt: r.attempt,
                    priority: r.priority,
                    request,
                    name: format!("{}/{}", r.job, r.index),
                });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task shows its job's reason when it has none of its own: only a task
    /// with its own reason, or whose reason is not its job's, is written.
    #[test]
    fn reasons_its_job_already_gives_are_not_written_per_task() {
        let [t1, t2, t3, t4] = [1u128, 2, 3, 4].map(|n| TaskId(uuid::Uuid::from_u128(n)));
        let page = PendingPage {
            replaceable: HashMap::from([
                (t1, None),
                (t2, Some("old".to_string())),
                (t3, None),
                (t4, Some("job".to_string())),
            ]),
            ..PendingPage::default()
        };
        let reasons = [(t1, "job"), (t2, "job"), (t3, "other"), (t4, "job")]
            .map(|(t, r)| (t, r.to_string()))
            .to_vec();
        let written: Vec<TaskId> = page
            .reasons_to_write(reasons, |_| Some("job"))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(written, [t2, t3]);
    }
}

//! The pending queue as the scheduler reads it: a page after a cursor, in
//! queue order, with what each task takes from its job.

use super::{capacity_from_db, fetch_all_under, PendingTask};
use anyhow::Context;
use borg_shared::spec::{Constraint, Spread};
use borg_shared::{JobId, MachineId, TaskId};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;

/// Where the previous page of the pending queue ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKey {
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    pub id: TaskId,
}

/// One page of the pending queue.
#[derive(Debug, Default)]
pub struct PendingPage {
    /// In queue order.
    pub tasks: Vec<PendingTask>,
    /// Tasks whose job's constraints could not be read, with the reason to show.
    pub unreadable: Vec<(TaskId, String)>,
    /// Rows read (tasks + unreadable): a full page means there may be more.
    pub rows: usize,
    /// Key of the last row, to continue from.
    pub last: Option<QueueKey>,
    /// Each task's reason as stored, if it may be replaced now (see
    /// `borg_store::REASON_REFRESH`); tasks absent here keep theirs a while.
    pub replaceable: HashMap<TaskId, Option<String>>,
}

impl PendingPage {
    /// Keep only the reasons worth writing into the tasks themselves: new, or
    /// changed and due, and not what the task shows already through its job
    /// (`job_reason`: the reason this pass gives its job, written once for all
    /// of the job's tasks without a reason of their own; see
    /// `Store::explain_waiting_jobs`).
    pub fn reasons_to_write<'r>(
        &self,
        reasons: Vec<(TaskId, String)>,
        job_reason: impl Fn(TaskId) -> Option<&'r str>,
    ) -> Vec<(TaskId, String)> {
        reasons
            .into_iter()
            .filter(|(task, reason)| match self.replaceable.get(task) {
                None => false,
                Some(None) => job_reason(*task) != Some(reason.as_str()),
                Some(Some(old)) => old != reason,
            })
            .collect()
    }
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: TaskId,
    job_id: JobId,
    priority: i32,
    created_at: DateTime<Utc>,
    cpu_milli: i64,
    memory: i64,
    disk: i64,
    reason: Option<String>,
    reason_due: bool,
    index: i32,
    failed_on: Option<MachineId>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: JobId,
    constraints: Option<Json<serde_json::Value>>,
    spread: Option<Json<serde_json::Value>>,
    ports: Option<i32>,
    owner: String,
    name: String,
    service: bool,
}

/// What a pending task takes from its job.
struct JobInfo {
    constraints: Arc<[Constraint]>,
    spread: Option<Arc<Spread>>,
    ports: u16,
    owner: Arc<str>,
    name: String,
    service: bool,
}

/// The tasks of a page: the queue's rows from `$cursor` on, in queue order
/// (`rank` is `-priority`, migration 0024), joined with their tasks and jobs.
/// A later page runs under [`WALK_IN_QUEUE_ORDER`] (see `read_pending`).
macro_rules! pending_page {
    ($cursor:expr) => {
        concat!(
            "SELECT t.id, t.job_id, t.priority, t.created_at, t.cpu_milli, t.memory, t.disk, t.reason,
                    (t.reason IS NULL OR t.updated_at < now() - $3 * interval '1 millisecond') AS reason_due,
                    t.index, t.failed_on
             FROM task_queue q
             JOIN tasks t ON t.id = q.task_id
             JOIN jobs j ON j.id = t.job_id
             WHERE ",
            $cursor,
            "
               AND t.state = 'pending'
               AND (t.not_before IS NULL OR t.not_before <= now())
               AND j.state IN ",
            borg_store::live_job!(),
            "
               AND t.job_id <> ALL($2)
               AND ($4::integer <= 1 OR q.part % $4::integer = $5::integer)
             ORDER BY q.rank, q.created_at, q.task_id
             LIMIT $1"
        )
    };
}

/// A page's settings (for its transaction): the queue's index walked in its
/// order, each row's task and job reached by key, nothing hashed or sorted,
/// by this backend alone.
/// - Late in a pass, with a page of 8,000 a third of what was left, the planner
///   preferred hashing every task and sorting (120 ms) to the walk (15–28 ms).
///   `scheduler/tests/plans.rs` checks the plan.
/// - Postgres gave a page two parallel workers: a process started for each,
///   ~10 ms before the first row, on the cores the commits need (3–4% fewer
///   placements/s at 10,000 machines, BENCHMARKS.md).
pub const WALK_IN_QUEUE_ORDER: &str = "SELECT set_config('enable_hashjoin', 'off', true),
            set_config('enable_mergejoin', 'off', true), set_config('enable_sort', 'off', true),
            set_config('max_parallel_workers_per_gather', '0', true)";

/// The first page: the queue from its head.
const PAGE_FROM_HEAD: &str = pending_page!("true");

/// A later page: the queue after the cursor, one row comparison that the
/// queue's index starts its scan at (see migration 0024).
/// `scheduler/tests/plans.rs` checks the plan.
const PAGE_AFTER: &str =
    pending_page!("(q.rank, q.created_at, q.task_id) > (-$6::integer, $7, $8)");

/// The statement `read_pending` runs with a cursor or without (for `plans.rs`).
pub fn pending_page_sql(after: bool) -> &'static str {
    if after {
        PAGE_AFTER
    } else {
        PAGE_FROM_HEAD
    }
}

/// Up to `limit` schedulable pending tasks after `after` in queue order: not
/// backing off (`not_before`) and of a job that is still live.
///
/// `skip`: jobs to leave out (this pass already found one of their tasks
/// unplaceable; their other tasks ask for the same and cannot fit either).
///
/// Two statements: the tasks (narrow rows), then what the page's jobs say
/// once per job (their specs are parsed once, not once per task).
pub async fn read_pending(
    pool: &PgPool,
    after: Option<&QueueKey>,
    skip: &[JobId],
    limit: u32,
    slice: crate::slice::Slice,
) -> anyhow::Result<PendingPage> {
    let query = sqlx::query_as(pending_page_sql(after.is_some()))
        .bind(i64::from(limit))
        .bind(skip)
        .bind(borg_store::REASON_REFRESH.as_millis() as f64)
        .bind(slice.of)
        .bind(slice.rank);
    let query = match after {
        Some(k) => query.bind(k.priority).bind(k.created_at).bind(k.id),
        None => query,
    };
    // A later page is the queue's next `limit` rows, not a share of the table
    // worth hashing and sorting. The first page (a pass woken for a few new
    // tasks reads only that one) is 128 rows from the queue's head, which the
    // planner walks in order on its own: it runs alone, without the
    // transaction's three more round trips.
    let settings = after.is_some().then_some(WALK_IN_QUEUE_ORDER);
    let rows: Vec<TaskRow> = fetch_all_under(pool, settings, query)
        .await
        .context("reading pending tasks")?;

    let mut job_ids: Vec<JobId> = rows.iter().map(|r| r.job_id).collect();
    job_ids.sort();
    job_ids.dedup();
    let job_rows: Vec<JobRow> = if job_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT j.id, j.spec->'constraints' AS constraints, j.spec->'spread' AS spread,
                    (j.spec->'task'->'resources'->>'ports')::integer AS ports, j.owner, j.name,
                    j.kind = 'service' AS service
             FROM jobs j WHERE j.id = ANY($1)",
        )
        .bind(&job_ids)
        .fetch_all(pool)
        .await
        .context("reading the pending tasks' jobs")?
    };
    let jobs: HashMap<JobId, Result<JobInfo, String>> = job_rows
        .into_iter()
        .map(|r| {
            let info = parse_constraints(r.constraints.as_ref().map(|j| &j.0)).and_then(|c| {
                Ok(JobInfo {
                    constraints: c,
                    spread: parse_spread(r.spread.as_ref().map(|j| &j.0))?,
                    ports: r.ports.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                    owner: Arc::from(r.owner.as_str()),
                    name: r.name,
                    service: r.service,
                })
            });
            (r.id, info)
        })
        .collect();

    let mut page = PendingPage {
        rows: rows.len(),
        ..PendingPage::default()
    };
    for r in rows {
        if r.reason_due {
            page.replaceable.insert(r.id, r.reason.clone());
        }
        page.last = Some(QueueKey {
            priority: r.priority,
            created_at: r.created_at,
            id: r.id,
        });
        match jobs.get(&r.job_id) {
            Some(Ok(job)) => page.tasks.push(PendingTask {
                id: r.id,
                job_id: r.job_id,
                priority: r.priority,
                created_at: r.created_at,
                request: capacity_from_db(r.cpu_milli, r.memory, r.disk),
                constraints: job.constraints.clone(),
                spread: job.spread.clone(),
                ports: job.ports,
                owner: job.owner.clone(),
                name: format!("{}/{}", job.name, r.index),
                failed_on: r.failed_on,
                service: job.service,
            }),
            Some(Err(e)) => page.unreadable.push((r.id, e.clone())),
            // The job vanished between the two reads (deleted): skip; it is gone next pass.
            None => {}
        }
    }
    Ok(page)
}

/// A job's constraints from its spec (absent or null: none).
fn parse_constraints(value: Option<&serde_json::Value>) -> Result<Arc<[Constraint]>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Arc::from(Vec::new())),
        Some(v) => Vec::<Constraint>::deserialize(v)
            .map(Arc::from)
            .map_err(|e| format!("cannot read the job's constraints: {e}")),
    }
}

/// A job's spread rule from its spec (absent or null: none).
fn parse_spread(value: Option<&serde_json::Value>) -> Result<Option<Arc<Spread>>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => Spread::deserialize(v)
            .map(|s| Some(Arc::new(s)))
            .map_err(|e| format!("cannot read the job's spread: {e}")),
    }
}

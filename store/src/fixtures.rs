//! History for benchmarks: finished jobs written straight into the tables, as
//! if they had run, so a bench can show that reads do not grow with history
//! (`jobctl bench --only reads`); and the machine the store's and master's
//! tests register, and placements for tests that play the scheduler. Never
//! used by the cell itself.

use crate::{Placement, Store};
use borg_shared::wire::{Capacity, RegisterMachine};
use borg_shared::{Bytes, JobId, MachineId, MilliCpu, TaskId};
use sqlx::PgConnection;

/// Placements on `machine` of the pending tasks (of those in `only`, when
/// given), in task index order, each asking what its task's row asks (as a
/// scheduler's would): for tests that play the scheduler.
pub async fn pending_placements(
    store: &Store,
    machine: MachineId,
    only: Option<&[TaskId]>,
) -> crate::Result<Vec<Placement>> {
    let rows: Vec<(TaskId, JobId, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, job_id, cpu_milli, memory, disk FROM tasks
         WHERE state = 'pending' AND ($1::uuid[] IS NULL OR id = ANY($1))
         ORDER BY index, id",
    )
    .bind(only)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(task, job, cpu, memory, disk)| Placement {
            task,
            job,
            machine,
            request: crate::rows::capacity(cpu, memory, disk),
            max_per_machine: None,
            ports: vec![],
        })
        .collect())
}

/// Register a machine of 4 cores and 8 GiB named `name`, reachable nowhere
/// (`http://127.0.0.1:1`): for tests that play the borglet themselves.
pub async fn test_machine(store: &Store, name: &str) -> crate::Result<MachineId> {
    let (m, _) = store
        .register_machine(&RegisterMachine {
            name: name.into(),
            address: "http://127.0.0.1:1".into(),
            capacity: Capacity {
                cpu: MilliCpu(4000),
                memory: Bytes(8 << 30),
                disk: Bytes(0),
            },
            labels: Default::default(),
            isolation: None,
            version: None,
            ports: Default::default(),
        })
        .await?;
    Ok(m.id)
}

/// One finished job in one statement: the job, its tasks, one attempt each
/// (which `tasks.attempt_id` names; that key is deferred), every task's five
/// events and the job's three, and its counter row. $1 name, $2 tasks, $3 spec,
/// $4 a machine.
const SEED_JOB: &str = "
WITH j AS (
    INSERT INTO jobs (id, name, kind, state, owner, priority, replicas, spec, finished_at)
    VALUES (uuid_v7(), $1, 'batch', 'succeeded', 'bench', 100, $2, $3::text::jsonb, now())
    RETURNING id
), ids AS MATERIALIZED (
    SELECT i, uuid_v7() AS task_id, uuid_v7() AS attempt_id
    FROM generate_series(0, $2 - 1) AS i
), t AS (
    INSERT INTO tasks (id, job_id, index, state, priority, cpu_milli, memory, disk,
                       attempt_id, runs, max_runs, updated_at)
    SELECT ids.task_id, j.id, ids.i, 'succeeded', 100, 10, 4194304, 0, ids.attempt_id, 1, 1, now()
    FROM j, ids
), a AS (
    INSERT INTO attempts (id, task_id, machine_id, state, cpu_milli, memory, disk,
                          created_at, started_at, finished_at)
    SELECT ids.attempt_id, ids.task_id, $4::text::uuid, 'succeeded', 10, 4194304, 0, now(), now(), now()
    FROM ids
), te AS (
    INSERT INTO events (kind, job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
    SELECT 'task', j.id, ids.task_id,
           CASE WHEN s.n > 1 THEN ids.attempt_id END,
           CASE WHEN s.n > 1 THEN $4::text::uuid END,
           s.from_state, s.to_state, s.reason
    FROM j, ids,
         (VALUES (1, NULL::text, 'pending'::text, 'submitted'::text),
                 (2, 'pending', 'assigned', NULL),
                 (3, 'assigned', 'starting', NULL),
                 (4, 'starting', 'running', NULL),
                 (5, 'running', 'succeeded', 'exit 0')) AS s (n, from_state, to_state, reason)
    ORDER BY ids.i, s.n
), je AS (
    INSERT INTO events (kind, job_id, from_state, to_state, reason)
    SELECT 'job', j.id, s.from_state, s.to_state, s.reason
    FROM j,
         (VALUES (1, NULL::text, 'pending'::text, 'submitted'::text),
                 (2, 'pending', 'running', NULL),
                 (3, 'running', 'succeeded', NULL)) AS s (n, from_state, to_state, reason)
    ORDER BY s.n
), c AS (
    INSERT INTO job_counts (job_id, shard, succeeded) SELECT j.id, 0, $2 FROM j
)
SELECT 1";

/// Write one succeeded batch job of `tasks` tasks named `name`, its attempts on
/// machine `machine` (a uuid), events and counters.
pub async fn seed_finished_job(
    conn: &mut PgConnection,
    name: &str,
    tasks: i32,
    spec: &serde_json::Value,
    machine: &str,
) -> crate::Result<()> {
    sqlx::query(SEED_JOB)
        .bind(name)
        .bind(tasks)
        .bind(spec.to_string())
        .bind(machine)
        .execute(conn)
        .await?;
    Ok(())
}

/// `n` machines `m-00000..` as rows (no borglet behind them), for the
/// scheduler's synthetic benchmark: zones `a`..`e` by turn, every fourth with
/// `ssd`, every third twice the size (32 cores / 128 GiB, else 16 / 64).
/// One statement.
pub async fn seed_machines(conn: &mut PgConnection, n: i32) -> crate::Result<()> {
    sqlx::query(
        "INSERT INTO machines (id, name, address, state, labels, cpu_milli, memory, disk)
         SELECT uuid_v7(), 'm-' || lpad(i::text, 5, '0'), '127.0.0.1:1', 'up',
                jsonb_build_object('zone', chr(97 + i % 5))
                    || CASE WHEN i % 4 = 0 THEN '{\"ssd\": \"true\"}'::jsonb ELSE '{}'::jsonb END,
                CASE WHEN i % 3 = 0 THEN 32000 ELSE 16000 END,
                CASE WHEN i % 3 = 0 THEN 128 ELSE 64 END * 1073741824::bigint,
                1099511627776
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n)
    .execute(conn)
    .await?;
    Ok(())
}

//! The commit's re-checks, each provoked deterministically against a real
//! Postgres: a stale snapshot, a task already claimed, a machine no longer up,
//! a task row held by another transaction.

use super::*;
use crate::snapshot::{read_pending, PendingTask};
use borg_shared::{AttemptId, JobId};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::time::Duration;

async fn setup() -> PgPool {
    // devpg may report "the database system is starting up" on its first call.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let url = loop {
        match devpg::testing::fresh_database(&borg_store::MIGRATOR).await {
            Ok(url) => break url,
            Err(e)
                if std::time::Instant::now() < deadline
                    && format!("{e:#}").contains("starting up") =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("a fresh database: {e:#}"),
        }
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO machines (id, name, address, cpu_milli, memory, disk) VALUES
             ('00000000-0000-0000-0000-0000000000a1', 'm1', 'x', 1000, 1073741824, 0),
             ('00000000-0000-0000-0000-0000000000a2', 'm2', 'x', 1000, 1073741824, 0);
         INSERT INTO jobs (id, name, kind, owner, priority, replicas, spec) VALUES
             ('00000000-0000-0000-0000-0000000000b1', 'j', 'batch', 't', 100, 3,
              '{\"name\": \"j\", \"task\": {\"command\": [\"true\"]}}');
         INSERT INTO tasks (id, job_id, index, priority, cpu_milli, memory, disk, max_runs)
         SELECT ('00000000-0000-0000-0000-0000000000c' || i)::uuid,
                '00000000-0000-0000-0000-0000000000b1', i, 100, 600, 1048576, 0, 1
         FROM generate_series(1, 3) AS i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

fn m(n: u8) -> MachineId {
    format!("00000000-0000-0000-0000-0000000000a{n}")
        .parse()
        .unwrap()
}

fn t(n: u8) -> TaskId {
    format!("00000000-0000-0000-0000-0000000000c{n}")
        .parse()
        .unwrap()
}

async fn pending(pool: &PgPool) -> Vec<PendingTask> {
    read_pending(pool, None, &[], 100, crate::slice::Slice::ALL)
        .await
        .unwrap()
        .tasks
}

async fn go(pool: &PgPool, tasks: &[PendingTask], placements: &[(TaskId, MachineId)]) -> Committed {
    let by_id: HashMap<TaskId, &PendingTask> = tasks.iter().map(|t| (t.id, t)).collect();
    let store = Store::from_pool(pool.clone());
    let placements: Vec<(TaskId, MachineId, Vec<u16>)> =
        placements.iter().map(|&(t, m)| (t, m, vec![])).collect();
    tokio::time::timeout(
        Duration::from_secs(10),
        commit(&store, "test", &by_id, &placements),
    )
    .await
    .expect("commit blocked")
    .unwrap()
}

async fn live_on(pool: &PgPool, machine: MachineId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE machine_id = $1 AND state IN ('assigned', 'starting', 'running')",
    )
    .bind(machine)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stale_snapshot_cannot_over_commit() {
    let pool = setup().await;
    // Both read while m1 was empty; each 600m task alone fits its 1000m.
    let stale = pending(&pool).await;
    let first = go(&pool, &stale, &[(t(1), m(1))]).await;
    assert_eq!(first.placed.len(), 1);
    assert_eq!(first.lost_races, 0);

    let second = go(&pool, &stale, &[(t(2), m(1))]).await;
    assert!(second.placed.is_empty());
    assert_eq!(second.lost_races, 1);
    assert_eq!(live_on(&pool, m(1)).await, 1);
    let (state, attempt): (String, Option<AttemptId>) =
        sqlx::query_as("SELECT state::text, attempt_id FROM tasks WHERE id = $1")
            .bind(t(2))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempt), ("pending", None));

    // Within one batch too: the second of two no longer fits once the first is in.
    let fresh = pending(&pool).await;
    let batch = go(&pool, &fresh, &[(t(2), m(2)), (t(3), m(2))]).await;
    assert_eq!(batch.placed.len(), 1);
    assert_eq!(batch.lost_races, 1);
    assert_eq!(batch.placed[0].task, t(2));
}

#[tokio::test]
async fn a_task_is_claimed_once() {
    let pool = setup().await;
    let stale = pending(&pool).await;
    assert_eq!(go(&pool, &stale, &[(t(1), m(1))]).await.placed.len(), 1);
    let again = go(&pool, &stale, &[(t(1), m(2))]).await;
    assert_eq!((again.placed.len(), again.lost_races), (0, 1));
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE task_id = $1")
        .bind(t(1))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn a_machine_that_left_up_gets_nothing() {
    let pool = setup().await;
    let stale = pending(&pool).await;
    sqlx::query("UPDATE machines SET state = 'draining' WHERE id = $1")
        .bind(m(1))
        .execute(&pool)
        .await
        .unwrap();
    let r = go(&pool, &stale, &[(t(1), m(1)), (t(2), m(2))]).await;
    assert_eq!((r.placed.len(), r.lost_races), (1, 1));
    assert_eq!(r.placed[0].machine, m(2));
    assert_eq!(live_on(&pool, m(1)).await, 0);
}

#[tokio::test]
async fn a_task_held_by_another_transaction_is_skipped_not_waited_for() {
    let pool = setup().await;
    let stale = pending(&pool).await;
    let mut other = borg_store::begin(&pool).await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE")
        .bind(t(1))
        .execute(&mut *other)
        .await
        .unwrap();
    // `go` fails the test if the commit blocks on the held row.
    let r = go(&pool, &stale, &[(t(1), m(1)), (t(2), m(2))]).await;
    assert_eq!((r.placed.len(), r.lost_races), (1, 1));
    assert_eq!(r.placed[0].task, t(2));
    other.rollback().await.unwrap();
}

#[tokio::test]
async fn a_job_killed_meanwhile_is_not_placed() {
    let pool = setup().await;
    let stale = pending(&pool).await;
    sqlx::query("UPDATE jobs SET state = 'killed'")
        .execute(&pool)
        .await
        .unwrap();
    let r = go(&pool, &stale, &[(t(1), m(1))]).await;
    assert_eq!((r.placed.len(), r.lost_races), (0, 1));
}

#[tokio::test]
async fn a_changed_pending_reason_waits_out_the_refresh_interval() {
    let pool = setup().await;
    let store = Store::from_pool(pool.clone());
    let reason = |pool: PgPool| async move {
        sqlx::query_scalar::<_, Option<String>>("SELECT reason FROM tasks WHERE id = $1")
            .bind(t(1))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        store
            .write_pending_reasons(&[(t(1), "a".into())])
            .await
            .unwrap(),
        1
    );
    // Changed at once: kept (the figures in a reason move with every pass).
    assert_eq!(
        store
            .write_pending_reasons(&[(t(1), "b".into())])
            .await
            .unwrap(),
        0
    );
    assert_eq!(reason(pool.clone()).await.as_deref(), Some("a"));
    sqlx::query("UPDATE tasks SET updated_at = now() - interval '1 minute' WHERE id = $1")
        .bind(t(1))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        store
            .write_pending_reasons(&[(t(1), "b".into())])
            .await
            .unwrap(),
        1
    );
    assert_eq!(reason(pool).await.as_deref(), Some("b"));
}

/// A job's reason is written once and shown by each of its waiting tasks
/// without a reason of their own; not by a task with its own, nor by one no
/// longer pending, nor by one that began to wait after the job was judged.
#[tokio::test]
async fn a_waiting_jobs_reason_is_shown_by_its_tasks_without_their_own() {
    let pool = setup().await;
    let store = Store::from_pool(pool.clone());
    let job: JobId = "00000000-0000-0000-0000-0000000000b1".parse().unwrap();
    let shown = |pool: PgPool| async move {
        sqlx::query_scalar::<_, Option<String>>("SELECT task_reason(t) FROM tasks t ORDER BY index")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        shown(pool.clone()).await,
        [None, None, None],
        "not judged yet"
    );
    sqlx::query("UPDATE tasks SET reason = 'own' WHERE id = $1")
        .bind(t(2))
        .execute(&pool)
        .await
        .unwrap();
    let why = |r: &str| vec![(job, r.to_string())];
    assert_eq!(store.explain_waiting_jobs(&why("a")).await.unwrap(), 1);
    let a = Some("a".to_string());
    assert_eq!(
        shown(pool.clone()).await,
        [a.clone(), Some("own".into()), a.clone()]
    );
    // One row for the whole job, however many tasks wait.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM job_waits")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // Changed at once: the job's reason stands until REASON_REFRESH.
    store.explain_waiting_jobs(&why("b")).await.unwrap();
    assert_eq!(shown(pool.clone()).await[0], a);
    sqlx::query("UPDATE job_waits SET reason_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    store.explain_waiting_jobs(&why("b")).await.unwrap();
    assert_eq!(shown(pool.clone()).await[0].as_deref(), Some("b"));

    // A task placed shows no waiting reason; one that began to wait after the
    // last judgment shows none until the job is judged again.
    sqlx::query("UPDATE tasks SET state = 'assigned' WHERE id = $1")
        .bind(t(1))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET pending_since = now() + interval '1 minute' WHERE id = $1")
        .bind(t(3))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(shown(pool.clone()).await, [None, Some("own".into()), None]);
    sqlx::query("UPDATE tasks SET pending_since = now() - interval '1 second' WHERE id = $1")
        .bind(t(3))
        .execute(&pool)
        .await
        .unwrap();
    store.explain_waiting_jobs(&why("b")).await.unwrap();
    assert_eq!(shown(pool).await[2].as_deref(), Some("b"));
}

#[tokio::test]
async fn max_per_machine_is_rechecked_under_the_machine_lock() {
    let pool = setup().await;
    sqlx::query("UPDATE jobs SET spec = jsonb_set(spec, '{spread}', '{\"max_per_machine\": 1}')")
        .execute(&pool)
        .await
        .unwrap();
    let tasks = pending(&pool).await;
    assert!(tasks.iter().all(|t| t.max_per_machine() == Some(1)));
    // Two of the job on m1 in one batch (a scheduler that ignored the rule):
    // only the first is kept.
    let c = go(&pool, &tasks, &[(t(1), m(1)), (t(2), m(1))]).await;
    assert_eq!((c.placed.len(), c.lost_races), (1, 1));
    // Another batch from a snapshot taken before that commit: m1 is taken.
    let c = go(&pool, &tasks, &[(t(3), m(1))]).await;
    assert_eq!((c.placed.len(), c.lost_races), (0, 1));
    let c = go(&pool, &tasks, &[(t(3), m(2))]).await;
    assert_eq!(c.placed.len(), 1);
    assert_eq!(
        (live_on(&pool, m(1)).await, live_on(&pool, m(2)).await),
        (1, 1)
    );
}

#[tokio::test]
async fn a_port_is_never_given_twice_on_a_machine() {
    let pool = setup().await;
    // Small enough that capacity never decides here: all three fit on one machine.
    sqlx::query("UPDATE tasks SET cpu_milli = 100")
        .execute(&pool)
        .await
        .unwrap();
    let tasks = pending(&pool).await;
    let by_id: HashMap<TaskId, &PendingTask> = tasks.iter().map(|t| (t.id, t)).collect();
    let store = Store::from_pool(pool.clone());
    // Two decisions for port 20005 on m1 in one batch: the first wins.
    let c = commit(
        &store,
        "test",
        &by_id,
        &[(t(1), m(1), vec![20005]), (t(2), m(1), vec![20005, 20006])],
    )
    .await
    .unwrap();
    assert_eq!((c.placed.len(), c.lost_races), (1, 1));
    // The same port on another machine is fine.
    let c = commit(&store, "test", &by_id, &[(t(2), m(2), vec![20005])])
        .await
        .unwrap();
    assert_eq!(c.placed.len(), 1);
    // A later batch from a stale snapshot: m1's 20005 is held by a live attempt.
    let c = commit(&store, "test", &by_id, &[(t(3), m(1), vec![20005])])
        .await
        .unwrap();
    assert_eq!((c.placed.len(), c.lost_races), (0, 1));
    // Outside the machine's range (20000-29999 by default): refused too.
    let c = commit(&store, "test", &by_id, &[(t(3), m(1), vec![30000])])
        .await
        .unwrap();
    assert_eq!((c.placed.len(), c.lost_races), (0, 1));
    let held: Vec<Vec<i32>> = sqlx::query_scalar("SELECT ports FROM attempts ORDER BY machine_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(held, [vec![20005], vec![20005]]);
}

#[tokio::test]
async fn quota_is_rechecked_under_its_row_lock() {
    let pool = setup().await;
    let tasks = pending(&pool).await;
    // Owner `t`, priority 100: the batch band; each task asks 600m.
    sqlx::query("INSERT INTO quotas (owner, band, cpu_milli) VALUES ('t', 'batch', 1000)")
        .execute(&pool)
        .await
        .unwrap();
    // A scheduler that ignored the quota: the second placement is dropped.
    let c = go(&pool, &tasks, &[(t(1), m(1)), (t(2), m(2))]).await;
    assert_eq!((c.placed.len(), c.lost_races), (1, 1));
    // Raised: now it fits.
    sqlx::query("UPDATE quotas SET cpu_milli = 1200")
        .execute(&pool)
        .await
        .unwrap();
    let c = go(&pool, &tasks, &[(t(2), m(2))]).await;
    assert_eq!(c.placed.len(), 1);
}

async fn task_state(pool: &PgPool, task: TaskId) -> String {
    sqlx::query_scalar("SELECT state::text FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pages_streams_commit_side_by_side() {
    let pool = setup().await;
    let tasks = pending(&pool).await;
    assert_ne!(
        commit_stream(m(1), 2),
        commit_stream(m(2), 2),
        "the two machines fall into different streams"
    );
    // Another transaction holds m1's row: the stream placing on m1 waits for it.
    let mut other = borg_store::begin(&pool).await.unwrap();
    sqlx::query("SELECT 1 FROM machines WHERE id = $1 FOR UPDATE")
        .bind(m(1))
        .execute(&mut *other)
        .await
        .unwrap();
    let page = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let by_id: HashMap<TaskId, &PendingTask> = tasks.iter().map(|t| (t.id, t)).collect();
            let placements = vec![(t(1), m(1), vec![]), (t(2), m(2), vec![])];
            commit_page(
                &Store::from_pool(pool),
                "test",
                &by_id,
                &placements,
                1000,
                2,
            )
            .await
            .unwrap()
        })
    };
    // The other stream commits meanwhile: m2's placement lands while m1 is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while task_state(&pool, t(2)).await != "assigned" {
        assert!(
            std::time::Instant::now() < deadline,
            "m2's placement waited for m1's stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(task_state(&pool, t(1)).await, "pending");
    other.rollback().await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), page)
        .await
        .expect("the page's commit finishes once m1 is free")
        .unwrap();
    let mut placed: Vec<(TaskId, MachineId)> =
        done.placed.iter().map(|p| (p.task, p.machine)).collect();
    placed.sort();
    assert_eq!(placed, vec![(t(1), m(1)), (t(2), m(2))]);
    assert_eq!(done.lost_races, 0);
}

#[test]
fn a_streams_short_tail_joins_its_batches() {
    // Whole batches, and a short stream in one.
    assert_eq!(chunk_len(8000, 4000), 4000);
    assert_eq!(chunk_len(3951, 4000), 3951);
    assert_eq!(chunk_len(0, 4000), 1);
    // A tail of up to an eighth of a batch joins: one transaction of 4,049.
    assert_eq!(chunk_len(4049, 4000), 4049);
    assert_eq!(chunk_len(4500, 4000), 4500);
    assert_eq!(chunk_len(8500, 4000), 4250);
    // A longer tail commits on its own, the batches as even as they go.
    assert_eq!(chunk_len(4501, 4000), 2251);
    assert_eq!(chunk_len(9000, 4000), 3000);
    // Batches of one stay batches of one.
    assert_eq!(chunk_len(3, 1), 1);
}

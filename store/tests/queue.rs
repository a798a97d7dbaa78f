//! The pending queue (`task_queue`, migrations 0023–0025) against a real Postgres: it
//! holds a row for each pending task, at the task's priority and in its job's
//! part, through submit, a priority change, a placement, a lost machine and a
//! kill.

mod common;

use borg_shared::{JobId, JobSpec, TaskId};
use borg_store::Store;
use common::{machine, store};

type Rows = Vec<(i32, uuid::Uuid, i16)>;

/// The job's queue rows and its pending tasks, each as (priority, task, part)
/// in order: a queue row's part as written, a task's as the schedulers split
/// the queue (the job id's hash modulo 64).
async fn queue_and_pending(store: &Store, job: JobId) -> (Rows, Rows) {
    let queue: Rows = sqlx::query_as(
        "SELECT -q.rank, q.task_id, q.part FROM task_queue q JOIN tasks t ON t.id = q.task_id
         WHERE t.job_id = $1 ORDER BY 1, 2",
    )
    .bind(job)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let pending: Rows = sqlx::query_as(
        "SELECT priority, id, ((hashtext(job_id::text)::bigint + 2147483648) % 64)::smallint
         FROM tasks WHERE job_id = $1 AND state = 'pending' ORDER BY 1, 2",
    )
    .bind(job)
    .fetch_all(store.pool())
    .await
    .unwrap();
    (queue, pending)
}

fn spec(priority: u32) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "name": "queued",
        "kind": "service",
        "priority": priority,
        "replicas": 3,
        "task": {"command": ["/bin/sleep", "60"]}
    }))
    .unwrap()
}

#[tokio::test]
async fn the_queue_holds_exactly_the_pending_tasks() {
    let store = store().await;
    let m = machine(&store, "m1").await;
    store.submit(&spec(100)).await.unwrap();
    let job: JobId = sqlx::query_scalar("SELECT id FROM jobs WHERE name = 'queued'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let (queue, pending) = queue_and_pending(&store, job).await;
    assert_eq!(pending.len(), 3);
    assert_eq!(queue, pending, "submitted");

    // A new priority moves the pending tasks in the queue.
    let out = store.update_job(&spec(150)).await.unwrap();
    assert!(
        matches!(out, borg_store::UpdateOutcome::Updated { .. }),
        "{out:?}"
    );
    let (queue, pending) = queue_and_pending(&store, job).await;
    assert!(pending.iter().all(|(p, _, _)| *p == 150), "{pending:?}");
    assert_eq!(queue, pending, "after the priority change");

    // A placement takes its task out.
    let task: TaskId = sqlx::query_scalar("SELECT id FROM tasks WHERE job_id = $1 AND index = 0")
        .bind(job)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let placements = borg_store::fixtures::pending_placements(&store, m, Some(&[task]))
        .await
        .unwrap();
    let committed = store.commit_placements("test", &placements).await.unwrap();
    assert_eq!(committed.placed.len(), 1);
    let (queue, pending) = queue_and_pending(&store, job).await;
    assert_eq!(pending.len(), 2);
    assert_eq!(queue, pending, "after a placement");

    // A lost machine puts its task back.
    let epoch = store
        .acquire_lease("test", std::time::Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .mark_machine_down(m, epoch, "test", None)
        .await
        .unwrap()
        .is_some());
    let (queue, pending) = queue_and_pending(&store, job).await;
    assert_eq!(pending.len(), 3);
    assert_eq!(queue, pending, "after the machine was lost");

    // A kill ends the rest.
    store.kill_job("queued", None, "test").await.unwrap();
    let (queue, pending) = queue_and_pending(&store, job).await;
    assert!(pending.is_empty());
    assert_eq!(queue, pending, "after the kill");
}

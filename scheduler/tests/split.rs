//! Two real `borgscheduler` processes against one Postgres with 10,000 tasks,
//! checked from the database: no machine over-committed, no task placed
//! twice, no constraint or `max_per_machine` broken, and the queue split
//! between them (each job placed by one scheduler only). Then
//! one is killed and the other takes over its part of the queue.

use borg_store::Store;
use borgscheduler::synth;
use std::path::Path;
use std::time::{Duration, Instant};

const TASKS: i64 = 10_000;

async fn slots_held(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// (job, scheduler) pairs from the placement events: "placed on M by NAME".
async fn placers(pool: &sqlx::PgPool) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as(
        "SELECT DISTINCT job_id, substring(reason from ' by (.*)$') FROM events
         WHERE kind = 'task' AND from_state = 'pending' AND to_state = 'assigned'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_split_the_queue_and_never_over_commit() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let store = Store::from_pool(pool.clone());
    let mut conn = pool.acquire().await.unwrap();
    borg_store::fixtures::seed_machines(&mut conn, 1000)
        .await
        .unwrap();
    drop(conn);

    let exe = Path::new(env!("CARGO_BIN_EXE_borgscheduler"));
    let args = [
        "--interval=200ms".to_string(),
        "--batch-size=500".to_string(),
    ];
    let mut procs = synth::SchedulerProcs::spawn(exe, &args, &url, 2).unwrap();
    // Both members before any work, so every pass sees the split.
    let deadline = Instant::now() + Duration::from_secs(60);
    while slots_held(&pool).await < 2 {
        assert!(
            Instant::now() < deadline,
            "the schedulers never took their slots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    synth::seed(&store, 0, TASKS).await.unwrap();
    sqlx::query("SELECT pg_notify('borg_pending', '')")
        .execute(&pool)
        .await
        .unwrap();

    let m = synth::measure(&procs, Duration::from_secs(300))
        .await
        .unwrap();
    let v = synth::verdict(&pool).await.unwrap();
    eprintln!("{m:?}\n{v:?}");
    assert!(v.clean(), "{v:?}");
    assert_eq!(
        (v.placed, v.pending),
        (TASKS, 0),
        "the cell has room for all"
    );
    assert_eq!(
        m.placed, TASKS as u64,
        "the passes account for every placement"
    );
    let by = placers(&pool).await;
    let mut jobs: Vec<uuid::Uuid> = by.iter().map(|(j, _)| *j).collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(
        jobs.len(),
        by.len(),
        "a job placed by both schedulers: {by:?}"
    );
    for name in ["bench-0", "bench-1"] {
        assert!(
            by.iter().any(|(_, s)| s == name),
            "{name} placed nothing: the work was not split"
        );
    }
    // The queue is split, the machines are not: a commit may still find a
    // machine filled by the other (a lost race, retried), never a task.
    eprintln!("lost races on machines: {}", m.conflicts);

    // One dies: the other takes the whole queue from its next pass.
    procs.kill(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while slots_held(&pool).await > 1 {
        assert!(
            Instant::now() < deadline,
            "the dead scheduler's slot stayed held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let since = procs.passes().len();
    let more: Vec<_> = synth::jobs(2_000)
        .into_iter()
        .map(|mut j| {
            j.name = format!("more-{}", j.name);
            j
        })
        .collect();
    for spec in &more {
        store.submit(spec).await.unwrap();
    }
    sqlx::query("SELECT pg_notify('borg_pending', '')")
        .execute(&pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = synth::verdict(&pool).await.unwrap();
        assert!(v.clean(), "{v:?}");
        if v.pending == 0 {
            assert_eq!(v.placed, TASKS + 2_000);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} tasks left pending with one scheduler ({} passes since the kill)",
            v.pending,
            procs.passes().len() - since
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

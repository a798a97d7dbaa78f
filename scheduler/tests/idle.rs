//! A queue that cannot move is not judged again every interval: only a
//! notification, a written event (some state changed) or an ended backoff
//! makes the next pass.

mod common;

use common::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

fn skips(scheduler: &str) -> usize {
    logged(scheduler)
        .iter()
        .filter(|l| l.message.starts_with("nothing changed"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaceable_queue_waits_for_a_change() {
    let (url, pool) = fresh_pool().await;
    MachineBuilder::new("small")
        .cpu(1000)
        .mem(GI)
        .insert(&pool)
        .await;
    let (_, big) = JobBuilder::new("big").cpu(4000).insert(&pool).await;

    let mut c = config(&url, "idle", Duration::from_millis(50), 100);
    c.recheck_after = Duration::from_secs(3600);
    let s = start_config(c);
    wait_until("the reason is written", DEADLINE, || async {
        task_state(&pool, big[0]).await.1.is_some()
    })
    .await;
    // Interval wake-ups now find nothing new and make no pass.
    let passes_before = passes("idle").len();
    let skipped = skips("idle");
    wait_until("five idle wake-ups", DEADLINE, || async {
        skips("idle") >= skipped + 5
    })
    .await;
    // A row written behind the store's back (no event, no notification) is not
    // a change the scheduler can see: still no pass.
    MachineBuilder::new("roomy")
        .cpu(8000)
        .mem(8 * GI)
        .insert(&pool)
        .await;
    let skipped = skips("idle");
    wait_until("five more idle wake-ups", DEADLINE, || async {
        skips("idle") >= skipped + 5
    })
    .await;
    assert!(
        passes("idle").len() <= passes_before + 1,
        "passes made with nothing changed: {:?}",
        &passes("idle")[passes_before..]
    );
    assert_eq!(task_state(&pool, big[0]).await.0, "pending");

    // An event (what every state change writes): the next wake-up passes.
    sqlx::query(
        "INSERT INTO events (kind, machine_id, from_state, to_state, reason)
         SELECT 'machine', id, NULL, 'up', 'registered' FROM machines WHERE name = 'roomy'",
    )
    .execute(&pool)
    .await
    .unwrap();
    wait_until(
        "the task is placed on the new machine",
        DEADLINE,
        || async { task_state(&pool, big[0]).await.0 == "assigned" },
    )
    .await;
    s.stop().await;
}

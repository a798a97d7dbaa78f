//! A task that keeps failing: each failed run in a row doubles its wait before
//! the next, up to 5 min; a long run starts the count again; the machine it
//! failed on is recorded for the scheduler to avoid (migration 0026). And a run
//! waiting out its in-place backoff shows as such (migration 0027).

use crate::helpers::{leader_epoch, spawn_app};
use crate::support::*;
use borg_shared::wire::AttemptPhase;
use borg_shared::MachineId;
use borgmaster::store::Store;
use chrono::{Duration, Utc};

/// The task's failed runs in a row, the machine it last failed on, and the
/// wait it was given (set in the same statement as `pending_since`).
async fn retry_state(store: &Store) -> (i32, Option<MachineId>, f64) {
    sqlx::query_as(
        "SELECT failed_runs, failed_on,
                extract(epoch FROM not_before - pending_since)::float8
         FROM tasks",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Place the task on `m` and have it exit with code 3 after running `ran`.
async fn run_and_fail(store: &Store, m: MachineId, name: &str, ran: Duration) {
    let id = place_one(store, m).await;
    let mut exit = report(id, AttemptPhase::Exited, Some(3));
    exit.started_at = Some(Utc::now() - ran);
    store
        .apply_report(m, name, leader_epoch(store).await, &[id], &[exit])
        .await
        .unwrap();
}

#[tokio::test]
async fn each_failed_run_in_a_row_doubles_the_wait_and_names_the_machine() {
    let app = spawn_app().await;
    let store = &app.store;
    let (m1, m2) = (machine(store).await, named_machine(store, "m2").await);
    submit(
        store,
        r#"{"name": "s", "kind": "service", "task": {"command": ["/bin/false"], "restart": {"backoff": "2s"}}}"#,
    )
    .await;
    let short = Duration::seconds(5);
    for (n, wait) in [(1, 2.0), (2, 4.0), (3, 8.0)] {
        run_and_fail(store, m1, "m1", short).await;
        assert_eq!(retry_state(store).await, (n, Some(m1), wait), "failure {n}");
    }
    // Up to five minutes.
    for _ in 0..6 {
        run_and_fail(store, m2, "m2", short).await;
    }
    assert_eq!(retry_state(store).await, (9, Some(m2), 300.0));
    let reason: String = sqlx::query_scalar("SELECT reason FROM tasks")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        reason,
        "restarting in 5m (9 failed runs in a row) after: exited with code 3"
    );
    // A run of ten minutes ends the loop: the next failure waits the job's backoff.
    run_and_fail(store, m1, "m1", Duration::minutes(11)).await;
    assert_eq!(retry_state(store).await, (1, Some(m1), 2.0));
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn a_lost_machine_is_no_failure_of_the_task() {
    let app = spawn_app().await;
    let store = &app.store;
    let m1 = machine(store).await;
    submit(
        store,
        r#"{"name": "s", "kind": "service", "task": {"command": ["/bin/sleep", "9"]}}"#,
    )
    .await;
    run_and_fail(store, m1, "m1", Duration::seconds(5)).await;
    assert_eq!(retry_state(store).await, (1, Some(m1), 1.0));
    // Placed again; the borglet then no longer knows the attempt (lost).
    let id = place_one(store, m1).await;
    store
        .apply_report(m1, "m1", leader_epoch(store).await, &[id], &[])
        .await
        .unwrap();
    let (runs, failed_on, wait) = retry_state(store).await;
    assert_eq!(
        (runs, failed_on),
        (1, None),
        "a lost run neither counts nor names the machine"
    );
    assert_eq!(wait, 1.0, "the job's backoff");
}

#[tokio::test]
async fn a_run_waiting_to_be_restarted_in_place_shows_backoff_until_it_runs_again() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(
        store,
        r#"{"name": "s", "kind": "service", "task": {"command": ["/bin/false"]}}"#,
    )
    .await;
    let id = place_one(store, m).await;
    let backoff_shown = || async {
        let view = store
            .job_detail("s", Default::default())
            .await
            .unwrap()
            .unwrap();
        let task = view.tasks.unwrap()[0].clone();
        (task.state.to_string(), task.backoff)
    };
    let sync = |r: borg_shared::wire::AttemptReport| async move {
        store
            .apply_report(m, "m1", leader_epoch(store).await, &[id], &[r])
            .await
            .unwrap();
    };
    sync(report(id, AttemptPhase::Running, None)).await;
    assert_eq!(backoff_shown().await, ("running".into(), false));
    // Its process exited; the borglet waits before restarting it.
    let mut waiting = report(id, AttemptPhase::Backoff, None);
    waiting.restarts = 1;
    waiting.last_exit = Some("exited with code 1".into());
    sync(waiting.clone()).await;
    assert_eq!(backoff_shown().await, ("running".into(), true));
    sync(waiting).await;
    assert_eq!(
        backoff_shown().await,
        ("running".into(), true),
        "a repeated report"
    );
    // Restarted: a new run, a new pid.
    let mut again = report(id, AttemptPhase::Running, None);
    again.restarts = 1;
    again.pid = Some(4343);
    sync(again).await;
    assert_eq!(backoff_shown().await, ("running".into(), false));
}

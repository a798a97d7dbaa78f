//! In-place restarts against a real borglet running real processes: the same
//! attempt runs again after its process exits, as its policy allows.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{AttemptBuilder, TestBorglet};

#[tokio::test]
async fn a_service_is_restarted_in_place_and_handed_back_when_it_keeps_failing() {
    let b = TestBorglet::spawn().await;
    // Each run appends a line, so the runs can be counted from the sandbox.
    let spec = AttemptBuilder::sh("echo run >> runs; exit 3")
        .restart(None, 10)
        .build();
    let id = spec.id;
    let specs = [spec];
    let done = b
        .sync_until(&specs, id, "the service handed back", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    // Five exits within ten minutes: four restarts, then handed back to the master.
    assert_eq!(done.restarts, 4, "{done:?}");
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.last_exit.as_deref(), Some("exited with code 3"));
    assert!(
        done.message
            .as_deref()
            .unwrap_or("")
            .contains("handed back"),
        "{done:?}"
    );
    let runs = std::fs::read_to_string(b.sandbox(id).join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 5);
}

#[tokio::test]
async fn a_batch_task_restarts_within_its_budget_and_stops_at_success() {
    let b = TestBorglet::spawn().await;
    // Fails twice, then succeeds: two restarts of a budget of three.
    let spec = AttemptBuilder::sh("echo run >> runs; [ $(wc -l < runs) -ge 3 ] && exit 0; exit 7")
        .restart(Some(3), 10)
        .build();
    let id = spec.id;
    let specs = [spec];
    let done = b
        .sync_until(&specs, id, "the batch task exited", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(done.restarts, 2);
    assert_eq!(done.last_exit.as_deref(), Some("exited with code 7"));

    // Out of budget: one restart allowed, the second failure is final.
    let spec = AttemptBuilder::sh("echo run >> runs; exit 9")
        .restart(Some(1), 10)
        .build();
    let id = spec.id;
    let specs = [spec];
    let done = b
        .sync_until(&specs, id, "the batch task gave up", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!((done.exit_code, done.restarts), (Some(9), 1), "{done:?}");
    let runs = std::fs::read_to_string(b.sandbox(id).join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 2);
}

#[tokio::test]
async fn an_exec_failure_is_not_retried() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::new(&["/nonexistent/program"])
        .restart(None, 10)
        .build();
    let id = spec.id;
    let specs = [spec];
    let r = b
        .sync_until(&specs, id, "failed to start", |r| {
            r.phase == AttemptPhase::FailedToStart
        })
        .await;
    assert_eq!(r.restarts, 0);
    let why = r.message.unwrap();
    assert!(
        why.contains("/nonexistent/program") && why.ends_with("No such file or directory"),
        "{why}"
    );
}

#[tokio::test]
async fn a_stop_during_the_backoff_ends_the_attempt_at_once() {
    let b = TestBorglet::spawn().await;
    // A long backoff: the stop lands while it waits.
    let spec = AttemptBuilder::sh("exit 4").restart(None, 60_000).build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "in backoff", |r| {
        r.phase == AttemptPhase::Backoff
    })
    .await;
    let r = b
        .sync_until(&[], id, "stopped", |r| r.phase == AttemptPhase::Exited)
        .await;
    assert!(r.stopped_by_borglet, "{r:?}");
    assert_eq!(r.exit_code, Some(4));
    assert_eq!(r.restarts, 1);
}

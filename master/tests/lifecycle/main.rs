//! Applying borglet reports: the task lifecycle in the store, against a real
//! Postgres. Placement is done the way the scheduler commits it.
//!
//! `failures.rs`: jobs that fail for good, the sweep, owners, a deposed leader.
//! `crash_loop.rs`: the wait and the machine to avoid after failed runs in a row.

mod crash_loop;
mod failures;
#[path = "../helpers/mod.rs"]
mod helpers;
mod support;

use borg_shared::wire::AttemptPhase;
use borg_shared::AttemptId;
use helpers::{leader_epoch, spawn_app};
use support::*;

#[tokio::test]
async fn batch_task_runs_to_success_and_is_acked() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(
        store,
        r#"{"name": "b", "task": {"command": ["/bin/true"]}}"#,
    )
    .await;
    place_all(store, m).await;

    let (wanted, new) = store.desired_attempts(m).await.unwrap();
    assert_eq!(wanted.len(), 1);
    assert_eq!(new, vec![wanted[0].id]);
    assert_eq!(wanted[0].command, vec!["/bin/true"]);
    store
        .mark_starting(m, leader_epoch(store).await, &new)
        .await
        .unwrap();
    assert_eq!(job_state(store).await.1, vec!["starting"]);

    let id = wanted[0].id;
    let out = store
        .apply_report(
            m,
            "m1",
            leader_epoch(store).await,
            &[id],
            &[report(id, AttemptPhase::Running, None)],
        )
        .await
        .unwrap();
    assert!(out.ack.is_empty());
    assert_eq!(
        job_state(store).await,
        ("running".into(), vec!["running".into()])
    );

    let out = store
        .apply_report(
            m,
            "m1",
            leader_epoch(store).await,
            &[id],
            &[report(id, AttemptPhase::Exited, Some(0))],
        )
        .await
        .unwrap();
    assert_eq!(out.ack, vec![id]);
    assert_eq!(
        job_state(store).await,
        ("succeeded".into(), vec!["succeeded".into()])
    );
    // Applying the same report twice changes nothing and still acks.
    let out = store
        .apply_report(
            m,
            "m1",
            leader_epoch(store).await,
            &[],
            &[report(id, AttemptPhase::Exited, Some(0))],
        )
        .await
        .unwrap();
    assert_eq!((out.ack, out.changed), (vec![id], 0));

    let moves: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT from_state, to_state FROM events WHERE kind = 'task' ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let moves: Vec<String> = moves
        .into_iter()
        .map(|(f, t)| format!("{}>{t}", f.unwrap_or_default()))
        .collect();
    assert_eq!(
        moves,
        [
            ">pending",
            "pending>assigned",
            "assigned>starting",
            "starting>running",
            "running>succeeded"
        ]
    );
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn failed_batch_task_retries_within_budget_then_fails_the_job() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(store, r#"{"name": "f", "task": {"command": ["/bin/false"], "restart": {"max_attempts": 2, "backoff": "1ms"}}}"#).await;
    for run in 1..=2 {
        place_all(store, m).await;
        let (wanted, _) = store.desired_attempts(m).await.unwrap();
        assert_eq!(wanted.len(), 1, "run {run}");
        let id = wanted[0].id;
        store
            .apply_report(
                m,
                "m1",
                leader_epoch(store).await,
                &[id],
                &[report(id, AttemptPhase::Exited, Some(3))],
            )
            .await
            .unwrap();
        let (job, tasks) = job_state(store).await;
        if run == 1 {
            assert_eq!((job.as_str(), tasks[0].as_str()), ("pending", "pending"));
            let reason: String = sqlx::query_scalar("SELECT reason FROM tasks")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert!(
                reason.contains("run 2 of 2") && reason.contains("exited with code 3"),
                "{reason}"
            );
        } else {
            assert_eq!((job.as_str(), tasks[0].as_str()), ("failed", "failed"));
        }
    }
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn in_place_restarts_are_recorded_and_spend_the_run_budget() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(store, r#"{"name": "r", "task": {"command": ["/bin/false"], "restart": {"max_attempts": 3, "backoff": "250ms"}}}"#).await;
    place_all(store, m).await;
    let (wanted, _) = store.desired_attempts(m).await.unwrap();
    let id = wanted[0].id;
    let restart = wanted[0]
        .restart
        .expect("the borglet is told how to restart");
    assert_eq!((restart.max_restarts, restart.backoff_ms), (Some(2), 250));

    // The borglet restarted it twice in place, then it failed for good.
    let mut r = report(id, AttemptPhase::Running, None);
    r.restarts = 2;
    r.last_exit = Some("exited with code 3".into());
    store
        .apply_report(m, "m1", leader_epoch(store).await, &[id], &[r.clone()])
        .await
        .unwrap();
    // Repeated, the same report changes nothing.
    store
        .apply_report(m, "m1", leader_epoch(store).await, &[id], &[r])
        .await
        .unwrap();
    let (runs, restarts, last): (i32, i32, Option<String>) = sqlx::query_as(
        "SELECT t.runs, a.restarts, a.last_exit FROM tasks t JOIN attempts a ON a.id = t.attempt_id",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((runs, restarts), (3, 2), "each restart is a run");
    assert_eq!(last.as_deref(), Some("exited with code 3"));
    // The budget sent stays what it was when the attempt began.
    let (wanted, _) = store.desired_attempts(m).await.unwrap();
    assert_eq!(wanted[0].restart.unwrap().max_restarts, Some(2));
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM events WHERE reason LIKE 'restarted in place%' ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        events,
        ["restarted in place (restart 2) after: exited with code 3"]
    );
    let view = store
        .job_detail("r", Default::default())
        .await
        .unwrap()
        .unwrap();
    let task = &view.tasks.unwrap()[0];
    assert_eq!(
        (task.restarts, task.last_exit.as_deref()),
        (2, Some("exited with code 3"))
    );

    let mut end = report(id, AttemptPhase::Exited, Some(3));
    end.restarts = 2;
    store
        .apply_report(m, "m1", leader_epoch(store).await, &[id], &[end])
        .await
        .unwrap();
    // Three runs of three: no new attempt.
    assert_eq!(
        job_state(store).await,
        ("failed".into(), vec!["failed".into()])
    );
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn a_task_that_cannot_start_fails_at_once_with_the_reason() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(
        store,
        r#"{"name": "s", "kind": "service", "task": {"command": ["/no/such"]}}"#,
    )
    .await;
    let id = place_one(store, m).await;
    let mut r = report(id, AttemptPhase::FailedToStart, None);
    r.message = Some("cannot start `/no/such`: No such file or directory (os error 2)".into());
    store
        .apply_report(m, "m1", leader_epoch(store).await, &[id], &[r])
        .await
        .unwrap();
    let (state, reason): (String, String) = sqlx::query_as("SELECT state::text, reason FROM tasks")
        .fetch_one(store.pool())
        .await
        .unwrap();
    // Even a service is not retried: it would fail the same way anywhere.
    assert_eq!(state, "failed");
    assert!(reason.contains("No such file"), "{reason}");
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn killed_job_stops_its_attempts_through_the_sync() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(store, r#"{"name": "s", "kind": "service", "replicas": 2, "task": {"command": ["/bin/sleep", "100"]}}"#).await;
    place_all(store, m).await;
    let (wanted, _) = store.desired_attempts(m).await.unwrap();
    let ids: Vec<AttemptId> = wanted.iter().map(|a| a.id).collect();
    let running: Vec<_> = ids
        .iter()
        .map(|id| report(*id, AttemptPhase::Running, None))
        .collect();
    store
        .apply_report(m, "m1", leader_epoch(store).await, &ids, &running)
        .await
        .unwrap();
    assert_eq!(job_state(store).await.0, "running");

    store.kill_job("s", None, "user").await.unwrap();
    // Killed attempts are no longer wanted: the borglet will stop them.
    assert!(store.desired_attempts(m).await.unwrap().0.is_empty());
    // One has exited after SIGTERM; the other the borglet no longer knows.
    let mut gone = report(ids[0], AttemptPhase::Exited, None);
    gone.signal = Some(15);
    gone.stopped_by_borglet = true;
    let out = store
        .apply_report(m, "m1", leader_epoch(store).await, &[], &[gone])
        .await
        .unwrap();
    assert_eq!(out.ack, vec![ids[0]]);
    assert_eq!(
        job_state(store).await,
        ("killed".into(), vec!["killed".into(), "killed".into()])
    );
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM attempts ORDER BY reason")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(
        reasons.iter().all(|r| r.starts_with("killed by user")),
        "{reasons:?}"
    );
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn concurrent_reports_from_two_machines_finish_the_job() {
    let app = spawn_app().await;
    let store = &app.store;
    let m1 = machine(store).await;
    let m2 = named_machine(store, "m2").await;
    // Many rounds: the lost update only shows when the two transactions overlap.
    for round in 0..15 {
        let name = format!("pair-{round}");
        submit(
            store,
            &format!(
                r#"{{"name": "{name}", "replicas": 2, "task": {{"command": ["/bin/true"]}}}}"#
            ),
        )
        .await;
        // Task 0 on m1, task 1 on m2.
        for (index, m) in [(0, m1), (1, m2)] {
            sqlx::query(
                "WITH p AS (SELECT t.id, gen_random_uuid() AS aid FROM tasks t JOIN jobs j ON j.id = t.job_id
                            WHERE j.name = $2 AND t.index = $3),
                      a AS (INSERT INTO attempts (id, task_id, machine_id, state, cpu_milli, memory, disk)
                            SELECT p.aid, p.id, $1, 'running', 1, 1, 0 FROM p)
                 UPDATE tasks SET state = 'running', attempt_id = p.aid, runs = 1 FROM p WHERE tasks.id = p.id",
            )
            .bind(m)
            .bind(&name)
            .bind(index)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let (w1, _) = store.desired_attempts(m1).await.unwrap();
        let (w2, _) = store.desired_attempts(m2).await.unwrap();
        let (a1, a2) = (w1[0].id, w2[0].id);
        let (e1, e2) = (
            [report(a1, AttemptPhase::Exited, Some(0))],
            [report(a2, AttemptPhase::Exited, Some(0))],
        );
        let (r1, r2) = tokio::join!(
            store.apply_report(
                m1,
                "m1",
                leader_epoch(store).await,
                std::slice::from_ref(&a1),
                &e1
            ),
            store.apply_report(
                m2,
                "m2",
                leader_epoch(store).await,
                std::slice::from_ref(&a2),
                &e2
            ),
        );
        r1.unwrap();
        r2.unwrap();
        let state: String = sqlx::query_scalar("SELECT state::text FROM jobs WHERE name = $1")
            .bind(&name)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(state, "succeeded", "round {round}");
    }
}

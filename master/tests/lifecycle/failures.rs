//! Jobs that fail for good, the sweep that finishes a missed job, kill and
//! scale by owner, and a deposed leader's report.

use crate::helpers::{leader_epoch, spawn_app};
use crate::support::*;
use borg_shared::wire::{AttemptPhase, Capacity};
use borg_shared::{AttemptId, Bytes, JobId, MilliCpu, TaskId};
use borgmaster::store::Placement;

#[tokio::test]
async fn a_task_failing_for_good_fails_the_job_and_stops_the_rest() {
    let app = spawn_app().await;
    let store = &app.store;
    let m1 = machine(store).await;
    let m2 = named_machine(store, "m2").await;
    submit(store, r#"{"name": "c", "replicas": 3, "task": {"command": ["/bin/false"], "restart": {"max_attempts": 1}}}"#).await;
    // Task 0 on m1 and task 1 on m2; task 2 stays pending.
    let tasks: Vec<(TaskId, JobId)> =
        sqlx::query_as("SELECT id, job_id FROM tasks ORDER BY index LIMIT 2")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let request = Capacity {
        cpu: MilliCpu(0),
        memory: Bytes(0),
        disk: Bytes(0),
    };
    let batch: Vec<Placement> = tasks
        .iter()
        .zip([m1, m2])
        .map(|((task, job), machine)| Placement {
            task: *task,
            job: *job,
            machine,
            request,
            max_per_machine: None,
            ports: vec![],
        })
        .collect();
    // The fixture's tasks request nothing, so the zero request matches their rows.
    sqlx::query("UPDATE tasks SET cpu_milli = 0, memory = 0, disk = 0")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store
            .commit_placements("test", &batch)
            .await
            .unwrap()
            .placed
            .len(),
        2
    );
    let (on_m1, _) = store.desired_attempts(m1).await.unwrap();
    let (on_m2, _) = store.desired_attempts(m2).await.unwrap();
    let (a1, a2) = (on_m1[0].id, on_m2[0].id);
    store
        .apply_report(
            m2,
            "m2",
            leader_epoch(store).await,
            &[a2],
            &[report(a2, AttemptPhase::Running, None)],
        )
        .await
        .unwrap();
    store
        .apply_report(
            m1,
            "m1",
            leader_epoch(store).await,
            &[a1],
            &[report(a1, AttemptPhase::Exited, Some(1))],
        )
        .await
        .unwrap();

    let (job, states) = job_state(store).await;
    assert_eq!(job, "failed");
    assert_eq!(states, ["failed", "running", "killed"]);
    // The running attempt on the other machine is asked to stop, with the reason.
    assert!(store.desired_attempts(m2).await.unwrap().0.is_empty());
    let stop: Option<String> = sqlx::query_scalar("SELECT stop_reason FROM attempts WHERE id = $1")
        .bind(a2)
        .fetch_one(store.pool())
        .await
        .unwrap();
    // It names the task that failed and how.
    assert_eq!(
        stop.as_deref(),
        Some("c/0 failed for good: exited with code 1")
    );
    // Its end, once reported, is recorded as killed.
    let mut gone = report(a2, AttemptPhase::Exited, None);
    gone.signal = Some(15);
    store
        .apply_report(m2, "m2", leader_epoch(store).await, &[], &[gone])
        .await
        .unwrap();
    assert_eq!(job_state(store).await.1, ["failed", "killed", "killed"]);
    let job_moves: Vec<String> =
        sqlx::query_scalar("SELECT to_state FROM events WHERE kind = 'job' ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(job_moves, ["pending", "running", "failed"]);
    let why: String =
        sqlx::query_scalar("SELECT reason FROM events WHERE kind = 'job' AND to_state = 'failed'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(why, "c/0 failed for good: exited with code 1");
    assert_counts_match_rows(store).await;
}

#[tokio::test]
async fn the_sweep_finishes_a_job_whose_check_was_missed() {
    let app = spawn_app().await;
    let store = &app.store;
    submit(
        store,
        r#"{"name": "w", "replicas": 2, "task": {"command": ["/bin/true"]}}"#,
    )
    .await;
    // As if a master died between committing the last report and checking the
    // job: the tasks and counters say succeeded, the job row does not.
    sqlx::raw_sql(
        "UPDATE tasks SET state = 'succeeded';
         UPDATE job_counts SET pending = 0, succeeded = 2;
         UPDATE jobs SET state = 'running';",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(
        store
            .refresh_jobs(leader_epoch(store).await, None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(job_state(store).await.0, "succeeded");
    let last: String = sqlx::query_scalar(
        "SELECT from_state || '>' || to_state FROM events WHERE kind = 'job' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(last, "running>succeeded");
    // Nothing more to do: a second sweep moves nothing.
    assert_eq!(
        store
            .refresh_jobs(leader_epoch(store).await, None)
            .await
            .unwrap(),
        0
    );
}

/// Kill and scale act on the job whose owner the caller's rights were checked
/// on: asked for another owner's job of that name, they find nothing.
#[tokio::test]
async fn kill_and_scale_touch_only_the_owner_that_was_checked() {
    use borgmaster::store::{KillOutcome, ScaleOutcome};
    let app = spawn_app().await;
    let store = &app.store;
    submit(store, r#"{"name": "s", "kind": "service", "owner": "alice", "replicas": 2, "task": {"command": ["/bin/sleep", "100"]}}"#).await;
    assert!(matches!(
        store.scale_job("s", Some("bob"), 3).await.unwrap(),
        ScaleOutcome::NotFound
    ));
    assert!(matches!(
        store.kill_job("s", Some("bob"), "bob").await.unwrap(),
        KillOutcome::NotFound
    ));
    assert_eq!(job_state(store).await.0, "pending");
    assert!(matches!(
        store.scale_job("s", Some("alice"), 3).await.unwrap(),
        ScaleOutcome::Scaled(_)
    ));
    assert!(matches!(
        store.kill_job("s", Some("alice"), "alice").await.unwrap(),
        KillOutcome::Killed(_)
    ));
}

/// Growing back over an index whose task a scale-down is still stopping is a
/// conflict to retry; once that task has ended it comes back (`killed →
/// pending`) and the counters still match the rows.
#[tokio::test]
async fn scaling_back_up_waits_for_a_stopping_task_then_brings_it_back() {
    use borgmaster::store::ScaleOutcome;
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(store, r#"{"name": "s", "kind": "service", "replicas": 2, "task": {"command": ["/bin/sleep", "100"]}}"#).await;
    place_all(store, m).await;
    assert!(matches!(
        store.scale_job("s", None, 1).await.unwrap(),
        ScaleOutcome::Scaled(_)
    ));
    // Index 1's attempt is asked to stop, not gone yet.
    assert!(matches!(
        store.scale_job("s", None, 2).await.unwrap(),
        ScaleOutcome::StillStopping { first: 1 }
    ));
    let (attempt,): (AttemptId,) = sqlx::query_as(
        "SELECT a.id FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.index = 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    store
        .apply_report(
            m,
            "m1",
            leader_epoch(store).await,
            &[attempt],
            &[report(attempt, AttemptPhase::Exited, None)],
        )
        .await
        .unwrap();
    let state: String = sqlx::query_scalar("SELECT state::text FROM tasks WHERE index = 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(state, "killed");
    assert!(matches!(
        store.scale_job("s", None, 2).await.unwrap(),
        ScaleOutcome::Scaled(_)
    ));
    let (state, runs): (String, i32) =
        sqlx::query_as("SELECT state::text, runs FROM tasks WHERE index = 1")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((state.as_str(), runs), ("pending", 0));
    assert_counts_match_rows(store).await;
}

/// A paused old leader's report, applied after a newer leader took the lease,
/// changes nothing: not the attempt, its task, its restarts nor the events.
#[tokio::test]
async fn a_deposed_leaders_report_changes_nothing() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    submit(
        store,
        r#"{"name": "b", "task": {"command": ["/bin/true"]}}"#,
    )
    .await;
    place_all(store, m).await;
    let old = leader_epoch(store).await;
    let (wanted, new) = store.desired_attempts(m).await.unwrap();
    store.mark_starting(m, old, &new).await.unwrap();
    let id = wanted[0].id;
    // Another replica leads now, for long enough that the test's master stays out.
    sqlx::query(
        "UPDATE leader_lease SET holder = 'newer', epoch = epoch + 1,
             expires_at = now() + interval '1 hour'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let events = app.count("events").await;
    let mut running = report(id, AttemptPhase::Running, None);
    running.restarts = 1;
    running.last_exit = Some("exited with code 3".into());
    running.healthy = Some(true);
    let exited = report(id, AttemptPhase::Exited, Some(0));
    for r in [running, exited.clone()] {
        let err = store
            .apply_report(m, "m1", old, &[id], &[r])
            .await
            .expect_err("the old epoch is refused");
        assert!(
            matches!(err, borgmaster::store::StoreError::Deposed { .. }),
            "{err}"
        );
    }
    let (attempt, restarts, task): (String, i32, String) = sqlx::query_as(
        "SELECT a.state::text, a.restarts, t.state::text
         FROM attempts a JOIN tasks t ON t.id = a.task_id",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (attempt.as_str(), restarts, task.as_str()),
        ("starting", 0, "starting")
    );
    assert_eq!(app.count("events").await, events, "no event written");
    // The same report from the new leader does apply.
    let newer = leader_epoch(store).await;
    assert_eq!(newer, old + 1);
    store
        .apply_report(m, "m1", newer, &[id], &[exited])
        .await
        .unwrap();
    assert_eq!(job_state(store).await.1, vec!["succeeded"]);
}

//! Applying borglet reports: the task lifecycle in the store, against a real
//! Postgres. Placement is done the way the scheduler commits it.

mod helpers;

use borg_shared::wire::{AttemptPhase, AttemptReport, Capacity, RegisterMachine};
use borg_shared::{AttemptId, Bytes, JobId, JobSpec, MachineId, MilliCpu, TaskId};
use borgmaster::store::{Placement, Store, SubmitOutcome};
use chrono::Utc;
use helpers::{leader_epoch, spawn_app};

async fn machine(store: &Store) -> MachineId {
    named_machine(store, "m1").await
}

async fn named_machine(store: &Store, name: &str) -> MachineId {
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
        .await
        .unwrap();
    m.id
}

async fn submit(store: &Store, json: &str) {
    let spec = JobSpec::from_json(json.as_bytes()).unwrap();
    assert!(matches!(
        store.submit(&spec).await.unwrap(),
        SubmitOutcome::Created(_)
    ));
}

/// Place every pending task on the machine through the scheduler's commit.
async fn place_all(store: &Store, m: MachineId) {
    let rows: Vec<(TaskId, JobId, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, job_id, cpu_milli, memory, disk FROM tasks WHERE state = 'pending' ORDER BY index",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    // Retries wait out their backoff first; the test does not.
    sqlx::query("UPDATE tasks SET not_before = NULL")
        .execute(store.pool())
        .await
        .unwrap();
    let batch: Vec<Placement> = rows
        .into_iter()
        .map(|(task, job, cpu, memory, disk)| Placement {
            task,
            job,
            machine: m,
            request: Capacity {
                cpu: MilliCpu(cpu as u64),
                memory: Bytes(memory as u64),
                disk: Bytes(disk as u64),
            },
            max_per_machine: None,
            ports: vec![],
        })
        .collect();
    let placed = store.commit_placements("test", &batch).await.unwrap();
    assert_eq!(placed.placed.len(), batch.len(), "every pending task fits");
}

fn report(id: AttemptId, phase: AttemptPhase, code: Option<i32>) -> AttemptReport {
    AttemptReport {
        id,
        phase,
        pid: Some(4242),
        started_at: Some(Utc::now()),
        finished_at: (phase == AttemptPhase::Exited).then(Utc::now),
        exit_code: code,
        signal: None,
        stopped_by_borglet: false,
        message: None,
        restarts: 0,
        last_exit: None,
        oom_killed: false,
        peak_memory: None,
        stderr_tail: None,
        usage: None,
        healthy: None,
        health_message: None,
    }
}

async fn job_state(store: &Store) -> (String, Vec<String>) {
    let job: String = sqlx::query_scalar("SELECT state::text FROM jobs")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let tasks: Vec<String> = sqlx::query_scalar("SELECT state::text FROM tasks ORDER BY index")
        .fetch_all(store.pool())
        .await
        .unwrap();
    (job, tasks)
}

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
    place_all(store, m).await;
    let (wanted, _) = store.desired_attempts(m).await.unwrap();
    let id = wanted[0].id;
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

/// The job counters must say what the task rows say, job by job.
async fn assert_counts_match_rows(store: &Store) {
    let mismatched: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "WITH rows AS (SELECT job_id, state::text AS state, count(*) AS n FROM tasks GROUP BY 1, 2),
              kept AS (SELECT job_id, s.state, sum(s.n)::bigint AS n
                       FROM job_counts c,
                            LATERAL (VALUES ('pending', c.pending), ('assigned', c.assigned),
                                            ('starting', c.starting), ('running', c.running),
                                            ('succeeded', c.succeeded), ('failed', c.failed),
                                            ('killed', c.killed), ('lost', c.lost)) AS s(state, n)
                       GROUP BY 1, 2)
         SELECT j.name, k.state, k.n, COALESCE(r.n, 0)
         FROM kept k JOIN jobs j ON j.id = k.job_id
         LEFT JOIN rows r ON r.job_id = k.job_id AND r.state = k.state
         WHERE k.n <> COALESCE(r.n, 0)",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(
        mismatched.is_empty(),
        "counters (job, state, kept, rows): {mismatched:?}"
    );
}

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

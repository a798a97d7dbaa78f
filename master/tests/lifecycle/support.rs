//! What the lifecycle tests share: a machine, a submit, placement the way the
//! scheduler commits it, reports as a borglet sends them, and the job's state.

use borg_shared::wire::{AttemptPhase, AttemptReport};
use borg_shared::{AttemptId, JobSpec, MachineId};
use borgmaster::store::{Store, SubmitOutcome};
use chrono::Utc;

pub async fn machine(store: &Store) -> MachineId {
    named_machine(store, "m1").await
}

pub async fn named_machine(store: &Store, name: &str) -> MachineId {
    borgmaster::store::fixtures::test_machine(store, name)
        .await
        .unwrap()
}

pub async fn submit(store: &Store, json: &str) {
    let spec = JobSpec::from_json(json.as_bytes()).unwrap();
    assert!(matches!(
        store.submit(&spec).await.unwrap(),
        SubmitOutcome::Created(_)
    ));
}

/// Place every pending task on the machine through the scheduler's commit.
pub async fn place_all(store: &Store, m: MachineId) {
    // Retries wait out their backoff first; the test does not.
    sqlx::query("UPDATE tasks SET not_before = NULL")
        .execute(store.pool())
        .await
        .unwrap();
    let batch = borgmaster::store::fixtures::pending_placements(store, m, None)
        .await
        .unwrap();
    let placed = store.commit_placements("test", &batch).await.unwrap();
    assert_eq!(placed.placed.len(), batch.len(), "every pending task fits");
}

/// Place the pending task on `m`; the attempt the machine is first asked to run.
pub async fn place_one(store: &Store, m: MachineId) -> AttemptId {
    place_all(store, m).await;
    let (wanted, _) = store.desired_attempts(m).await.unwrap();
    wanted[0].id
}

pub fn report(id: AttemptId, phase: AttemptPhase, code: Option<i32>) -> AttemptReport {
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

pub async fn job_state(store: &Store) -> (String, Vec<String>) {
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

/// The job counters must say what the task rows say, job by job.
pub async fn assert_counts_match_rows(store: &Store) {
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

//! What the leader reads and writes, against a real Postgres.
//!
//! Every write made as leader checks the epoch, in the write's own transaction:
//! after another replica took the lease, the old leader's sweep, `last_heard`
//! flush, down/up marking, drain step, rollout step and history collection are
//! refused (`Deposed`) and write nothing; the new leader's same calls act, and
//! the events they write record its epoch (`events.epoch`).
//!
//! Desired sets are read for many machines in one query, each the same as read alone.

mod common;

use borg_shared::wire::Capacity;
use borg_shared::{Bytes, JobId, JobSpec, MachineId, MilliCpu, TaskId};
use borg_store::rollout::UpdateOutcome;
use borg_store::{Placement, Store, StoreError, SubmitOutcome};
use chrono::Utc;
use common::{machine, store};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

async fn submit(store: &Store, json: &str) -> JobId {
    let spec = JobSpec::from_json(json.as_bytes()).unwrap();
    match store.submit(&spec).await.unwrap() {
        SubmitOutcome::Created(job) => job.id,
        _ => panic!("not created"),
    }
}

/// Place every pending task on `m` the way the scheduler commits it.
async fn place_all(store: &Store, m: MachineId) {
    place_some(store, &[m], i64::MAX).await;
}

/// Place up to `n` pending tasks, in index order, round robin over `on`.
async fn place_some(store: &Store, on: &[MachineId], n: i64) {
    let rows: Vec<(TaskId, JobId, i64, i64)> = sqlx::query_as(
        "SELECT id, job_id, cpu_milli, memory FROM tasks WHERE state = 'pending'
         ORDER BY index LIMIT $1",
    )
    .bind(n)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let batch: Vec<Placement> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (task, job, cpu, memory))| Placement {
            task,
            job,
            machine: on[i % on.len()],
            request: Capacity {
                cpu: MilliCpu(cpu as u64),
                memory: Bytes(memory as u64),
                disk: Bytes(0),
            },
            max_per_machine: None,
            ports: vec![],
        })
        .collect();
    let placed = store.commit_placements("test", &batch).await.unwrap();
    assert_eq!(placed.placed.len(), batch.len());
}

/// Everything a leader's write could change, as one comparable value.
async fn state(store: &Store) -> Vec<String> {
    let queries = [
        "SELECT count(*)::text FROM events",
        "SELECT string_agg(name || ' ' || state::text || ' ' || coalesce(last_heard::text, '-'), ', ' ORDER BY name) FROM machines",
        "SELECT string_agg(name || ' ' || state::text, ', ' ORDER BY name) FROM jobs",
        "SELECT string_agg(index || ' ' || state::text || ' ' || runs, ', ' ORDER BY job_id, index) FROM tasks",
        "SELECT string_agg(state::text || ' ' || coalesce(stop_reason, '-'), ', ' ORDER BY id) FROM attempts",
        "SELECT string_agg(state::text || ' ' || ready || ' ' || updated_at::text, ', ') FROM rollouts",
    ];
    let mut out = Vec::new();
    for q in queries {
        let v: Option<String> = sqlx::query_scalar(q).fetch_one(store.pool()).await.unwrap();
        out.push(v.unwrap_or_default());
    }
    out
}

async fn events_at(store: &Store, epoch: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE epoch = $1")
        .bind(epoch)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn deposed<T: std::fmt::Debug>(what: &str, r: borg_store::Result<T>) {
    match r {
        Err(StoreError::Deposed { .. }) => {}
        other => panic!("{what} at the old epoch: {other:?}, not Deposed"),
    }
}

#[tokio::test]
async fn every_leader_write_at_an_old_epoch_is_refused_and_the_new_leaders_acts() {
    let store = store().await;
    let old = store.acquire_lease("old", HOUR).await.unwrap().unwrap();
    let m1 = machine(&store, "m1").await;
    let m2 = machine(&store, "m2").await;
    let svc = r#"{"name": "s", "kind": "service", "replicas": 2,
                  "task": {"command": ["/bin/sleep", "600"]}}"#;
    submit(&store, svc).await;
    let b = submit(
        &store,
        r#"{"name": "b", "task": {"command": ["/bin/true"]}}"#,
    )
    .await;
    // As if the master died between the last report of `b` and its check: the
    // counters say succeeded, the job row does not (work for the sweep).
    sqlx::query("UPDATE tasks SET state = 'succeeded' WHERE job_id = $1")
        .bind(b)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE job_counts SET pending = 0, succeeded = 1 WHERE job_id = $1")
        .bind(b)
        .execute(store.pool())
        .await
        .unwrap();
    place_all(&store, m1).await;
    // A draining machine and a rolling job: the controllers look at them.
    store.drain_machine("m1").await.unwrap();
    let v2 = JobSpec::from_json(svc.replace("600", "601").as_bytes()).unwrap();
    assert!(matches!(
        store.update_job(&v2).await.unwrap(),
        UpdateOutcome::Updated { .. }
    ));
    // While it leads, the old leader's writes go through and carry its epoch.
    assert!(store
        .mark_machine_down(m2, old, "test", None)
        .await
        .unwrap()
        .is_some());
    assert_eq!(events_at(&store, old).await, 1, "the down event, at {old}");
    let unled: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE epoch IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(unled > 0, "API and scheduler writes record no epoch");

    // Another replica takes over: the old lease expired (its holder paused).
    sqlx::query("UPDATE leader_lease SET expires_at = now() - interval '1 millisecond'")
        .execute(store.pool())
        .await
        .unwrap();
    let new = store.acquire_lease("new", HOUR).await.unwrap().unwrap();
    assert_eq!(new, old + 1);

    let before = state(&store).await;
    deposed("the sweep", store.refresh_jobs(old, None).await);
    deposed("a job check", store.refresh_jobs(old, Some(&[b])).await);
    deposed(
        "last_heard",
        store.record_heard(old, &[(m1, Utc::now())]).await,
    );
    deposed(
        "marking down",
        store.mark_machine_down(m1, old, "test", None).await,
    );
    deposed("marking up", store.mark_machine_up(m2, old, "test").await);
    deposed("a drain step", store.drain_step(old).await);
    deposed("a rollout step", store.rollout_step(old).await);
    deposed(
        "history collection",
        store.collect_history(old, Duration::ZERO, 100).await,
    );
    assert_eq!(state(&store).await, before, "a deposed leader wrote");

    // The new leader's same calls act.
    assert_eq!(store.refresh_jobs(new, None).await.unwrap(), 1);
    store.record_heard(new, &[(m1, Utc::now())]).await.unwrap();
    assert!(store.mark_machine_up(m2, new, "test").await.unwrap());
    store.drain_step(new).await.unwrap();
    assert_eq!(store.rollout_step(new).await.unwrap().rollouts, 1);
    let after = state(&store).await;
    for (i, what) in ["events", "machines", "jobs"].iter().enumerate() {
        assert_ne!(after[i], before[i], "the new leader changed no {what}");
    }
    assert_eq!(events_at(&store, old).await, 1, "nothing more at {old}");
    assert!(events_at(&store, new).await >= 2, "b ended, m2 up");
}

#[tokio::test]
async fn desired_sets_of_many_machines_are_read_in_one_call_each_as_read_alone() {
    let store = store().await;
    let m1 = machine(&store, "m1").await;
    let m2 = machine(&store, "m2").await;
    let idle = machine(&store, "m3").await;
    submit(
        &store,
        r#"{"name": "s", "kind": "service", "replicas": 5,
            "task": {"command": ["/bin/sleep", "600"], "env": {"A": "1"}}}"#,
    )
    .await;
    // Four placed over m1 and m2, one left pending (on no machine).
    place_some(&store, &[m1, m2], 4).await;
    let sets = store.desired_attempts_of(&[m1, m2, idle]).await.unwrap();
    assert_eq!(sets.len(), 3);
    for m in [m1, m2, idle] {
        let (alone, new) = store.desired_attempts(m).await.unwrap();
        let batched = &sets[&m];
        let ids = |a: &[borg_shared::wire::AttemptSpec]| a.iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(&batched.attempts), ids(&alone), "machine {m}");
        assert_eq!(batched.new, new, "machine {m}");
        assert_eq!(
            serde_json::to_value(&batched.attempts).unwrap(),
            serde_json::to_value(&alone).unwrap()
        );
    }
    assert_eq!(sets[&m1].attempts.len(), 2);
    assert_eq!(sets[&m2].attempts.len(), 2);
    assert!(sets[&idle].attempts.is_empty());
    let indexes: Vec<i32> = sets[&m1].attempts.iter().map(|a| a.index).collect();
    assert_eq!(indexes, [0, 2], "each machine gets its own attempts");
    assert_eq!(
        sets[&m1].attempts[0].env.get("A").map(String::as_str),
        Some("1")
    );
}

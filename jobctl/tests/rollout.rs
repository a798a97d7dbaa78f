//! Rolling updates through `jobctl` against a cell of real processes (a
//! throwaway Postgres, master, scheduler, 3 borglets): a service rolls to a new
//! version never more than `max_unavailable` tasks down (checked from the task
//! events), a failing version rolls back by itself, pause holds a rollout and
//! resume finishes it, and `apply` of a replica count alone is a scale.

#[path = "no_loss/cell.rs"]
mod cell;

use cell::{jobctl, wait_for, Alive, Cell};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn flags() -> Vec<String> {
    ["--poll-interval", "200ms"].map(String::from).to_vec()
}

/// A service spec: `line` run by sh, with `GREETING` set to `greeting`.
fn service(name: &str, replicas: u32, line: &str, greeting: &str, min_healthy: &str) -> Value {
    json!({"name": name, "kind": "service", "replicas": replicas,
        "task": {"command": ["/bin/sh", "-c", line], "env": {"GREETING": greeting},
                 "resources": {"cpu": "10m", "memory": "4Mi"}},
        "update": {"max_unavailable": 1, "min_healthy": min_healthy}})
}

/// Write `spec` as a file jobctl reads and `jobctl apply -f` it.
fn apply(cell: &Cell, spec: &Value) -> (bool, String) {
    apply_with(cell, spec, &[])
}

fn apply_with(cell: &Cell, spec: &Value, flags: &[&str]) -> (bool, String) {
    let name = spec["name"].as_str().unwrap();
    let path = cell.path().join(format!("{name}.json"));
    std::fs::write(&path, spec.to_string()).unwrap();
    let mut args = vec!["apply", "-f", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    jobctl(cell, &args)
}

/// index → (state, attempt, version)
type Tasks = BTreeMap<i64, (String, Option<String>, Option<i64>)>;

async fn tasks(cell: &Cell, job: &str) -> Option<Tasks> {
    let v = cell.get(&format!("/v1/jobs/{job}")).await?;
    let mut out = BTreeMap::new();
    for t in v["tasks"].as_array()? {
        out.insert(
            t["index"].as_i64()?,
            (
                t["state"].as_str()?.to_string(),
                t["attempt"].as_str().map(String::from),
                t["version"].as_i64(),
            ),
        );
    }
    Some(out)
}

/// Every task of `indexes` running version `version`.
async fn running_on(cell: &Cell, job: &str, n: i64, version: i64) -> Tasks {
    wait_for(
        &format!("{job}'s {n} tasks running version {version}"),
        Duration::from_secs(90),
        || async {
            let t = tasks(cell, job).await?;
            (t.len() as i64 == n && t.values().all(|t| t.0 == "running" && t.2 == Some(version)))
                .then_some(t)
        },
    )
    .await
}

async fn rollout(cell: &Cell, job: &str) -> Value {
    cell.get(&format!("/v1/jobs/{job}/rollout")).await.unwrap()
}

async fn event_mark(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The most tasks of `job` down at once, replaying its task events after `mark`
/// in order (each starts running).
async fn most_down_at_once(pool: &sqlx::PgPool, job: &str, mark: i64) -> usize {
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT t.index, e.to_state FROM events e JOIN tasks t ON t.id = e.task_id
         JOIN jobs j ON j.id = t.job_id
         WHERE e.kind = 'task' AND e.id > $1 AND j.name = $2 ORDER BY e.id",
    )
    .bind(mark)
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut down: BTreeMap<i32, bool> = BTreeMap::new();
    let mut worst = 0;
    for (index, to) in &rows {
        down.insert(*index, to != "running");
        worst = worst.max(down.values().filter(|d| **d).count());
    }
    worst
}

async fn rollout_steps(pool: &sqlx::PgPool, job: &str, mark: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT e.reason FROM events e JOIN jobs j ON j.id = e.job_id
         WHERE e.kind = 'job' AND e.id > $1 AND j.name = $2 AND e.reason LIKE 'rollout: %'
         ORDER BY e.txid, e.id",
    )
    .bind(mark)
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rolling_update_replaces_every_task_one_at_a_time() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let v1 = service("web", 3, &alive.line(), "v1", "1s");
    let (ok, out) = apply(&cell, &v1);
    assert!(ok && out.contains("job/web created"), "{out}");
    let before = running_on(&cell, "web", 3, 1).await;
    let mark = event_mark(&pool).await;

    let v2 = service("web", 3, &alive.line(), "v2", "1s");
    let (ok, out) = apply(&cell, &v2);
    assert!(ok, "{out}");
    assert!(
        out.contains("job/web configured (version 1 → 2, rolling out)"),
        "{out}"
    );
    let (ok, out) = jobctl(
        &cell,
        &["rollout", "status", "web", "--wait", "--timeout", "2m"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("successfully rolled out (version 2, 3 of 3 tasks ready)"),
        "{out}"
    );

    let after = running_on(&cell, "web", 3, 2).await;
    for i in 0..3 {
        assert_ne!(after[&i].1, before[&i].1, "task {i} kept its old attempt");
    }
    assert_eq!(most_down_at_once(&pool, "web", mark).await, 1);
    let steps = rollout_steps(&pool, "web", mark).await;
    let replacing = steps
        .iter()
        .filter(|s| s.contains(": replacing web/"))
        .count();
    assert_eq!(replacing, 3, "one task per step: {steps:?}");
    assert!(
        steps
            .last()
            .unwrap()
            .contains("version 2 rolled out: 3 of 3 tasks ready"),
        "{steps:?}"
    );
    // Every old attempt ended as replaced, and its task went back to the queue for it.
    let ends: Vec<String> = sqlx::query_scalar(
        "SELECT e.reason FROM events e JOIN tasks t ON t.id = e.task_id
         WHERE e.id > $1 AND e.kind = 'task' AND e.to_state = 'pending'",
    )
    .bind(mark)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ends.len(), 3, "{ends:?}");
    assert!(
        ends.iter()
            .all(|r| r.starts_with("replaced by version 2 (update)")),
        "{ends:?}"
    );
    let r = rollout(&cell, "web").await;
    assert_eq!(
        (r["state"].as_str(), r["updated"].as_i64()),
        (Some("done"), Some(3)),
        "{r}"
    );

    let (ok, out) = jobctl(&cell, &["get", "tasks", "web"]);
    assert!(
        ok && out.contains("VERSION") && !out.contains("(stale)"),
        "{out}"
    );
    let (ok, out) = jobctl(&cell, &["describe", "job", "web"]);
    assert!(
        ok && out.contains("Version:") && out.contains("Rollout:"),
        "{out}"
    );

    // A replica count alone is a scale: no new version, no task disturbed.
    let (ok, out) = apply(&cell, &service("web", 4, &alive.line(), "v2", "1s"));
    assert!(ok && out.contains("job/web scaled to 4 replicas"), "{out}");
    let four = running_on(&cell, "web", 4, 2).await;
    for i in 0..3 {
        assert_eq!(four[&i].1, after[&i].1, "task {i} was disturbed by a scale");
    }
    // The same spec again changes nothing.
    let (ok, out) = apply(&cell, &service("web", 4, &alive.line(), "v2", "1s"));
    assert!(ok && out.contains("job/web unchanged"), "{out}");

    // A live batch job is not updated in place.
    let batch = json!({"name": "b", "task": {"command": ["/bin/sh", "-c", alive.line()],
        "resources": {"cpu": "10m", "memory": "4Mi"}}});
    assert!(apply(&cell, &batch).0);
    let mut batch2 = batch.clone();
    batch2["task"]["env"] = json!({"X": "1"});
    let (ok, out) = apply(&cell, &batch2);
    assert!(
        !ok && out.contains("batch job is not updated in place"),
        "{out}"
    );
    assert!(out.contains("(conflict)"), "{out}");
}

#[tokio::test]
async fn a_failing_version_rolls_back_by_itself() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let v1 = service("web", 3, &alive.line(), "v1", "1s");
    let (ok, out) = apply_with(&cell, &v1, &["--wait", "--timeout", "2m"]);
    assert!(ok && out.contains("job/web created"), "{out}");
    let before = running_on(&cell, "web", 3, 1).await;
    let mark = event_mark(&pool).await;

    let (ok, out) = apply(&cell, &service("web", 3, "exit 3", "v2", "1s"));
    assert!(ok, "{out}");
    let (ok, out) = jobctl(
        &cell,
        &["rollout", "status", "web", "--wait", "--timeout", "2m"],
    );
    assert!(!ok, "a rolled-back rollout exits 1: {out}");
    assert!(out.contains("rolled back to version 1"), "{out}");
    assert!(out.contains("version 2 failed"), "{out}");

    let after = running_on(&cell, "web", 3, 1).await;
    // Only one task was ever taken to version 2; the others were never disturbed.
    let moved: Vec<i64> = (0..3).filter(|i| after[i].1 != before[i].1).collect();
    assert_eq!(moved.len(), 1, "{before:?} → {after:?}");
    let v2: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE version = 2")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(v2 >= 1, "the failing version ran");
    let live_v2: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE version = 2 AND state IN ('assigned', 'starting', 'running')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(live_v2, 0);
    assert_eq!(most_down_at_once(&pool, "web", mark).await, 1);
    let steps = rollout_steps(&pool, "web", mark).await;
    let failed = steps
        .iter()
        .find(|s| s.contains("failed"))
        .unwrap_or_else(|| panic!("{steps:?}"));
    assert!(failed.contains("rolling back to version 1"), "{failed}");
    assert!(failed.contains("web/"), "names the failing task: {failed}");
    assert!(
        steps
            .last()
            .unwrap()
            .contains("rolled back to version 1: 3 of 3 tasks ready"),
        "{steps:?}"
    );
    let r = rollout(&cell, "web").await;
    assert_eq!(
        (r["state"].as_str(), r["target_version"].as_i64()),
        (Some("rolled_back"), Some(1))
    );
    let job = cell.get("/v1/jobs/web").await.unwrap();
    assert_eq!(job["spec"]["task"]["env"]["GREETING"], "v1");
}

#[tokio::test]
async fn pause_holds_a_rollout_and_resume_finishes_it() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    assert!(apply(&cell, &service("web", 3, &alive.line(), "v1", "3s")).0);
    running_on(&cell, "web", 3, 1).await;
    let mark = event_mark(&pool).await;

    // A replaced task runs 3 s before the next is replaced: time to pause in between.
    assert!(apply(&cell, &service("web", 3, &alive.line(), "v2", "3s")).0);
    // Pause once the first task is replaced.
    wait_for("a first task replaced", Duration::from_secs(60), || async {
        (rollout(&cell, "web").await["updated"].as_i64()? >= 1).then_some(())
    })
    .await;
    let (ok, out) = jobctl(&cell, &["rollout", "pause", "web"]);
    assert!(ok && out.contains("job/web rollout paused"), "{out}");
    let paused_at = event_mark(&pool).await;
    let (ok, out) = jobctl(&cell, &["rollout", "status", "web"]);
    assert!(ok && out.contains("rollout is paused"), "{out}");
    // Hold until the replaced task has run past `min_healthy` (3 s) by longer
    // than the controller takes between steps (500 ms), several times over: an
    // unpaused rollout would have replaced the next one by then.
    wait_for(
        "a replaced task running for 5 s",
        Duration::from_secs(60),
        || async {
            let ready: Option<bool> = sqlx::query_scalar(
                "SELECT bool_or(t.state = 'running' AND a.version = 2
                            AND t.updated_at < now() - interval '5 seconds')
             FROM tasks t JOIN attempts a ON a.id = t.attempt_id",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            ready?.then_some(())
        },
    )
    .await;
    let r = rollout(&cell, "web").await;
    assert_eq!(
        (r["state"].as_str(), r["updated"].as_i64()),
        (Some("paused"), Some(1)),
        "{r}"
    );
    let held = rollout_steps(&pool, "web", paused_at).await;
    assert!(
        held.iter().all(|s| !s.contains("replacing")),
        "a step while paused: {held:?}"
    );

    let (ok, out) = jobctl(&cell, &["rollout", "resume", "web"]);
    assert!(ok && out.contains("resumed"), "{out}");
    let (ok, out) = jobctl(&cell, &["rollout", "status", "web", "-w"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    running_on(&cell, "web", 3, 2).await;
    assert_eq!(most_down_at_once(&pool, "web", mark).await, 1);

    // Undo of a completed rollout goes back to the version before it.
    let (ok, out) = jobctl(&cell, &["rollout", "undo", "web"]);
    assert!(ok && out.contains("rolling back to version 1"), "{out}");
    let (ok, out) = jobctl(&cell, &["rollout", "status", "web", "-w"]);
    assert!(!ok && out.contains("rolled back to version 1"), "{out}");
    running_on(&cell, "web", 3, 1).await;
}

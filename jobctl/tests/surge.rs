//! Surging rollouts (`update.max_surge`) against a cell of real processes (a
//! throwaway Postgres, master, scheduler, 3 borglets): with `max_unavailable:
//! 0, max_surge: 1` each task's new attempt comes up before its old one stops,
//! so the tasks serving never drop below the replica count (polled all along,
//! the minimum kept); a failing new version rolls back onto the old attempts
//! themselves; killing the job mid-surge ends every attempt.

#[path = "no_loss/cell.rs"]
mod cell;

use cell::{jobctl, wait_for, Alive, Cell};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn flags() -> Vec<String> {
    ["--poll-interval", "200ms"].map(String::from).to_vec()
}

/// A service that surges: nothing down, one extra attempt at a time.
fn service(replicas: u32, line: &str, greeting: &str, min_healthy: &str) -> Value {
    json!({"name": "web", "kind": "service", "replicas": replicas,
        "task": {"command": ["/bin/sh", "-c", line], "env": {"GREETING": greeting},
                 "resources": {"cpu": "10m", "memory": "4Mi"}},
        "update": {"max_unavailable": 0, "max_surge": 1, "min_healthy": min_healthy}})
}

async fn put(spec: &Value, cell: &Cell) -> (u16, Value) {
    let resp = cell::http_client()
        .put(format!("{}/v1/jobs/web", cell.master_url()))
        .json(spec)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// index → (state, attempt, version) of every task, once all run `version`.
async fn running_on(cell: &Cell, n: usize, version: i64) -> Vec<(String, String)> {
    wait_for(
        &format!("{n} tasks running version {version}"),
        Duration::from_secs(90),
        || async {
            let job = cell.get("/v1/jobs/web").await?;
            let tasks = job["tasks"].as_array()?;
            let on: Vec<(String, String)> = tasks
                .iter()
                .filter(|t| t["state"] == "running" && t["version"].as_i64() == Some(version))
                .filter(|t| t["superseded"].is_null())
                .filter_map(|t| {
                    Some((t["attempt"].as_str()?.into(), t["machine"].as_str()?.into()))
                })
                .collect();
            (on.len() == n && tasks.len() == n).then_some(on)
        },
    )
    .await
}

/// Watches the job from Postgres until stopped: the fewest tasks serving (a
/// running attempt nobody asked to stop, the task's own or a superseded one)
/// and the most live superseded attempts seen at once.
struct Watch {
    stop: Arc<AtomicBool>,
    fewest_serving: Arc<AtomicI64>,
    most_superseded: Arc<AtomicI64>,
    polls: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(pool: sqlx::PgPool) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let fewest_serving = Arc::new(AtomicI64::new(i64::MAX));
        let most_superseded = Arc::new(AtomicI64::new(0));
        let polls = Arc::new(AtomicI64::new(0));
        let (s, f, m, p) = (
            stop.clone(),
            fewest_serving.clone(),
            most_superseded.clone(),
            polls.clone(),
        );
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let (serving, superseded): (i64, i64) = sqlx::query_as(
                    "SELECT
                       count(DISTINCT t.id) FILTER (WHERE a.state = 'running' AND a.stop_reason IS NULL),
                       count(*) FILTER (WHERE a.superseded)
                     FROM tasks t JOIN jobs j ON j.id = t.job_id
                     JOIN attempts a ON a.task_id = t.id
                     WHERE j.name = 'web' AND a.state IN ('assigned', 'starting', 'running')",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                f.fetch_min(serving, Ordering::SeqCst);
                m.fetch_max(superseded, Ordering::SeqCst);
                p.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        });
        Watch {
            stop,
            fewest_serving,
            most_superseded,
            polls,
            task,
        }
    }

    /// (fewest serving, most superseded, polls).
    async fn finish(self) -> (i64, i64, i64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.fewest_serving.load(Ordering::SeqCst),
            self.most_superseded.load(Ordering::SeqCst),
            self.polls.load(Ordering::SeqCst),
        )
    }
}

async fn rollout_steps(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT reason FROM events WHERE kind = 'job' AND reason LIKE 'rollout: %' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_surging_rollout_never_lowers_the_tasks_serving() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let (status, body) = cell
        .post("/v1/jobs", service(3, &alive.line(), "v1", "1s"))
        .await;
    assert_eq!(status, 201, "{body}");
    let before = running_on(&cell, 3, 1).await;

    let watch = Watch::start(pool.clone());
    let rolled_at: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (status, body) = put(&service(3, &alive.line(), "v2", "1s"), &cell).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    // Seen through the API: a task waiting for its new attempt shows its old one.
    let shown = wait_for(
        "a superseded attempt shown",
        Duration::from_secs(60),
        || async {
            let job = cell.get("/v1/jobs/web").await?;
            job["tasks"]
                .as_array()?
                .iter()
                .find(|t| !t["superseded"].is_null())
                .cloned()
        },
    )
    .await;
    assert_eq!(shown["superseded"]["version"], 1, "{shown}");
    assert!(
        before
            .iter()
            .any(|(a, _)| Some(a.as_str()) == shown["superseded"]["attempt"].as_str()),
        "{shown}"
    );
    let reason = shown["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("surging to version 2: version 1 still runs on m")
            || shown["state"] != "pending",
        "{shown}"
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
    let after = running_on(&cell, 3, 2).await;
    // Every old attempt has ended (the last one stops after the rollout is done).
    wait_for("the old attempts ended", Duration::from_secs(30), || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attempts WHERE version = 1 AND state IN ('assigned', 'starting', 'running')",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (live == 0).then_some(())
    })
    .await;
    // An old copy's end moves no task (so no task event names its machine):
    // its machine is stamped for the schedulers' machine caches instead.
    let unstamped: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT m.name FROM attempts a JOIN machines m ON m.id = a.machine_id
         WHERE a.version = 1 AND m.sched_txid <= $1::text::xid8",
    )
    .bind(&rolled_at)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(unstamped.is_empty(), "machines not re-read: {unstamped:?}");
    let (fewest, most, polls) = watch.finish().await;
    assert!(polls > 20, "watched {polls} times only");
    assert_eq!(fewest, 3, "tasks serving dropped below the replicas");
    assert_eq!(most, 1, "more superseded attempts at once than max_surge");

    for (attempt, _) in &before {
        assert!(
            after.iter().all(|(a, _)| a != attempt),
            "an old attempt is a task's"
        );
    }
    let ends: Vec<(String, String)> =
        sqlx::query_as("SELECT state::text, coalesce(reason, '') FROM attempts WHERE version = 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ends.len(), 3);
    for (state, reason) in &ends {
        assert_eq!(state, "killed", "{ends:?}");
        assert!(
            reason.starts_with("replaced by version 2 (update, surge)"),
            "{ends:?}"
        );
    }
    let steps = rollout_steps(&pool).await;
    let surged = steps
        .iter()
        .filter(|s| s.contains(": surging web/"))
        .count();
    assert_eq!(surged, 3, "one task per step: {steps:?}");
    assert!(
        steps.iter().any(|s| s.contains("surge 1 of 1")),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.contains("version 2 rolled out: 3 of 3 tasks ready")),
        "{steps:?}"
    );
    // No task ever went down on the way: no task event but the surge's own
    // (running → pending) and its new attempt's way up.
    let down: Vec<String> = sqlx::query_scalar(
        "SELECT e.from_state || '→' || e.to_state || ': ' || coalesce(e.reason, '')
         FROM events e WHERE e.kind = 'task' AND e.to_state IN ('failed', 'killed', 'lost')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(down.is_empty(), "{down:?}");
    let r = cell.get("/v1/jobs/web/rollout").await.unwrap();
    assert_eq!(
        (
            r["state"].as_str(),
            r["max_surge"].as_i64(),
            r["surging"].as_i64()
        ),
        (Some("done"), Some(1), Some(0)),
        "{r}"
    );
    let (ok, out) = jobctl(&cell, &["get", "tasks", "web"]);
    assert!(ok && !out.contains("(stale)"), "{out}");
}

#[tokio::test]
async fn a_failing_surged_version_rolls_back_onto_the_old_attempts() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let (status, body) = cell
        .post("/v1/jobs", service(3, &alive.line(), "v1", "1s"))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut before = running_on(&cell, 3, 1).await;

    let watch = Watch::start(pool.clone());
    let (status, body) = put(&service(3, "exit 3", "v2", "1s"), &cell).await;
    assert_eq!(status, 200, "{body}");
    let (ok, out) = jobctl(
        &cell,
        &["rollout", "status", "web", "--wait", "--timeout", "2m"],
    );
    assert!(!ok, "a rolled-back rollout exits 1: {out}");
    assert!(out.contains("rolled back to version 1"), "{out}");
    assert!(out.contains("version 2 failed"), "{out}");
    let mut after = running_on(&cell, 3, 1).await;
    wait_for("the new attempts ended", Duration::from_secs(30), || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attempts WHERE version = 2 AND state IN ('assigned', 'starting', 'running')",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (live == 0).then_some(())
    })
    .await;
    let (fewest, most, _) = watch.finish().await;
    assert_eq!(fewest, 3, "tasks serving dropped below the replicas");
    assert!(most <= 1, "{most} superseded at once");
    // The very same attempts run again: nothing was restarted or moved.
    before.sort();
    after.sort();
    assert_eq!(before, after);
    let superseded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts WHERE superseded AND version = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(superseded, 0, "every old attempt is its task's again");
    let steps = rollout_steps(&pool).await;
    assert!(
        steps
            .iter()
            .any(|s| s.contains("superseded attempts run as their tasks' again: web/")),
        "{steps:?}"
    );
    assert!(
        steps
            .last()
            .is_some_and(|s| s.contains("rolled back to version 1: 3 of 3 tasks ready")),
        "{steps:?}"
    );
}

#[tokio::test]
async fn killing_a_job_mid_surge_ends_every_attempt() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    // A long `min_healthy`: the surge holds while the job is killed.
    let (status, body) = cell
        .post("/v1/jobs", service(2, &alive.line(), "v1", "10m"))
        .await;
    assert_eq!(status, 201, "{body}");
    running_on(&cell, 2, 1).await;
    let (status, body) = put(&service(2, &alive.line(), "v2", "10m"), &cell).await;
    assert_eq!(status, 200, "{body}");
    wait_for(
        "a new attempt running beside its superseded one",
        Duration::from_secs(60),
        || async {
            let job = cell.get("/v1/jobs/web").await?;
            job["tasks"]
                .as_array()?
                .iter()
                .any(|t| t["state"] == "running" && t["superseded"]["state"] == "running")
                .then_some(())
        },
    )
    .await;

    // One state per task, the old copy beside the new one where it is asked about.
    let job = cell.get("/v1/jobs/web").await.unwrap();
    let surged = job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| !t["superseded"].is_null())
        .unwrap()["index"]
        .as_i64()
        .unwrap();
    let (ok, out) = jobctl(&cell, &["describe", "task", &format!("web/{surged}")]);
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("Superseded:")
            && l.contains("(version 1)")
            && l.ends_with("running")),
        "{out}"
    );
    let (ok, out) = jobctl(&cell, &["rollout", "status", "web"]);
    assert!(ok && out.contains("surge 1/1"), "{out}");
    let (ok, out) = jobctl(&cell, &["get", "tasks", "web"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("web/")).count(),
        2,
        "one row per task: {out}"
    );

    let (status, body) = cell.post("/v1/jobs/web/kill", json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_for("every attempt ended", Duration::from_secs(30), || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attempts WHERE state IN ('assigned', 'starting', 'running')",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (live == 0).then_some(())
    })
    .await;
    let ends: Vec<(i32, bool, String)> =
        sqlx::query_as("SELECT version, superseded, state::text FROM attempts ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ends.len(), 3, "two old attempts and one new: {ends:?}");
    assert!(ends.iter().all(|(_, _, s)| s == "killed"), "{ends:?}");
    assert!(ends.iter().any(|(v, s, _)| *v == 1 && *s), "{ends:?}");
    let job = cell.get("/v1/jobs/web").await.unwrap();
    assert_eq!(job["state"], "killed", "{job}");
    assert!(
        job["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "killed" && t["superseded"].is_null()),
        "{job}"
    );
    let r = cell.get("/v1/jobs/web/rollout").await.unwrap();
    assert_eq!(r["state"], "aborted", "{r}");
}

/// A superseded attempt on a draining machine stops once its task runs its
/// new attempt (no task goes down for it); the task keeps that attempt.
#[tokio::test]
async fn a_drain_stops_a_superseded_attempt_once_its_task_runs_anew() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    // One copy per machine: the new attempt lands away from the old one. A
    // long `min_healthy` holds the surge: only the drain stops the old copy.
    let spread = |greeting: &str| {
        let mut s = service(1, &alive.line(), greeting, "10m");
        s["spread"] = json!({"max_per_machine": 1});
        s
    };
    let (status, body) = cell.post("/v1/jobs", spread("v1")).await;
    assert_eq!(status, 201, "{body}");
    let before = running_on(&cell, 1, 1).await;
    let (old, victim) = before[0].clone();
    let (status, body) = put(&spread("v2"), &cell).await;
    assert_eq!(status, 200, "{body}");
    let new = wait_for(
        "the new attempt running beside the old one",
        Duration::from_secs(60),
        || async {
            let job = cell.get("/v1/jobs/web").await?;
            let t = job["tasks"].as_array()?.first()?.clone();
            (t["state"] == "running" && t["superseded"]["attempt"] == old.as_str())
                .then(|| t["attempt"].as_str().map(String::from))
                .flatten()
        },
    )
    .await;

    let (ok, out) = jobctl(&cell, &["drain", &victim]);
    assert!(ok, "{out}");
    let ended: (String, String) =
        wait_for("the old copy stopped", Duration::from_secs(30), || async {
            sqlx::query_as(
                "SELECT state::text, coalesce(reason, '') FROM attempts
             WHERE id = $1::uuid AND state NOT IN ('assigned', 'starting', 'running')",
            )
            .bind(&old)
            .fetch_optional(&pool)
            .await
            .ok()?
        })
        .await;
    assert_eq!(ended.0, "killed", "{ended:?}");
    assert!(
        ended.1.starts_with("moved off draining machine"),
        "{ended:?}"
    );
    let job = cell.get("/v1/jobs/web").await.unwrap();
    let t = &job["tasks"][0];
    assert_eq!(
        (t["state"].as_str(), t["attempt"].as_str()),
        (Some("running"), Some(new.as_str())),
        "{job}"
    );
    assert!(t["superseded"].is_null(), "{job}");
}

/// A surged task with no room for its new attempt (one copy per machine, every
/// machine holding one) waits `pending`, and its old copy keeps serving it:
/// the job still resolves to every task, the old copy where the task waits.
#[tokio::test]
async fn a_task_waiting_for_room_is_served_by_its_old_copy() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let spread = |greeting: &str| {
        let mut s = service(3, &alive.line(), greeting, "1s");
        s["spread"] = json!({"max_per_machine": 1});
        s
    };
    let (status, body) = cell.post("/v1/jobs", spread("v1")).await;
    assert_eq!(status, 201, "{body}");
    let before = running_on(&cell, 3, 1).await;
    let (status, body) = put(&spread("v2"), &cell).await;
    assert_eq!(status, 200, "{body}");
    let waiting = wait_for("a surged task pending", Duration::from_secs(60), || async {
        let job = cell.get("/v1/jobs/web").await?;
        job["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["state"] == "pending" && t["superseded"]["state"] == "running")
            .cloned()
    })
    .await;
    let old = waiting["superseded"]["attempt"].as_str().unwrap();
    let resolved = cell.get("/v1/resolve/web").await.unwrap();
    let tasks = resolved["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3, "{resolved}");
    let served = tasks
        .iter()
        .find(|t| t["index"] == waiting["index"])
        .unwrap_or_else(|| panic!("{resolved}"));
    assert_eq!(served["attempt"], old, "{resolved}");
    for (attempt, _) in &before {
        assert!(
            tasks.iter().any(|t| t["attempt"] == attempt.as_str()),
            "{attempt} not resolved: {resolved}"
        );
    }
}

/// `rollout undo` mid-surge: the surged task runs on its old attempt again
/// (the same attempt, never stopped) and its new one is stopped.
#[tokio::test]
async fn an_undo_mid_surge_puts_the_task_back_on_its_old_attempt() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    // A long `min_healthy` holds the surge while the operator undoes it.
    let (status, body) = cell
        .post("/v1/jobs", service(2, &alive.line(), "v1", "10m"))
        .await;
    assert_eq!(status, 201, "{body}");
    running_on(&cell, 2, 1).await;
    let (status, body) = put(&service(2, &alive.line(), "v2", "10m"), &cell).await;
    assert_eq!(status, 200, "{body}");
    let surged = wait_for(
        "a new attempt running beside its superseded one",
        Duration::from_secs(60),
        || async {
            let job = cell.get("/v1/jobs/web").await?;
            job["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["state"] == "running" && t["superseded"]["state"] == "running")
                .cloned()
        },
    )
    .await;
    let (index, old, new) = (
        surged["index"].as_i64().unwrap(),
        surged["superseded"]["attempt"]
            .as_str()
            .unwrap()
            .to_string(),
        surged["attempt"].as_str().unwrap().to_string(),
    );

    let (ok, out) = jobctl(&cell, &["rollout", "undo", "web"]);
    assert!(ok && out.contains("rolling back to version 1"), "{out}");
    let back = wait_for(
        "the task on its old attempt",
        Duration::from_secs(30),
        || async {
            let job = cell.get("/v1/jobs/web").await?;
            let t = job["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["index"] == index)?
                .clone();
            (t["attempt"] == old.as_str() && t["state"] == "running").then_some(t)
        },
    )
    .await;
    assert_eq!(back["version"], 1, "{back}");
    let ended: (String, String) = wait_for(
        "the new attempt stopped",
        Duration::from_secs(30),
        || async {
            sqlx::query_as(
                "SELECT state::text, coalesce(reason, '') FROM attempts
             WHERE id = $1::uuid AND state NOT IN ('assigned', 'starting', 'running')",
            )
            .bind(&new)
            .fetch_optional(&pool)
            .await
            .ok()?
        },
    )
    .await;
    assert_eq!(ended.0, "killed", "{ended:?}");
    assert!(
        ended
            .1
            .starts_with("replaced by version 1 (its superseded attempt on m"),
        "{ended:?}"
    );
    let old_state: String =
        sqlx::query_scalar("SELECT state::text FROM attempts WHERE id = $1::uuid")
            .bind(&old)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(old_state, "running", "the old attempt never stopped");
    // Its task events: back to pending, then assigned and running on the old attempt.
    let moves: Vec<String> = sqlx::query_scalar(
        "SELECT e.from_state || '→' || e.to_state FROM events e JOIN tasks t ON t.id = e.task_id
         WHERE e.kind = 'task' AND t.index = $1 ORDER BY e.id DESC LIMIT 3",
    )
    .bind(index as i32)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        moves,
        ["assigned→running", "pending→assigned", "running→pending"]
    );
}

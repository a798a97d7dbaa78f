//! Operator actions through `jobctl` against a cell of real processes (a
//! throwaway Postgres, master, scheduler, 3 borglets): scaling a service up and
//! down, and draining a machine with at most one task of a job down at a time.

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

/// index → (state, machine, attempt, pid)
type Tasks = BTreeMap<i64, (String, Option<String>, Option<String>, Option<i32>)>;

async fn tasks(cell: &Cell, job: &str) -> Option<Tasks> {
    let v = cell.get(&format!("/v1/jobs/{job}")).await?;
    let mut out = BTreeMap::new();
    for t in v["tasks"].as_array()? {
        let s = |k: &str| t[k].as_str().map(String::from);
        out.insert(
            t["index"].as_i64()?,
            (
                s("state")?,
                s("machine"),
                s("attempt"),
                t["pid"].as_i64().map(|p| p as i32),
            ),
        );
    }
    Some(out)
}

async fn running(cell: &Cell, job: &str, indexes: std::ops::Range<i64>) -> Tasks {
    wait_for("the tasks running", Duration::from_secs(60), || async {
        let t = tasks(cell, job).await?;
        indexes
            .clone()
            .all(|i| t.get(&i).is_some_and(|t| t.0 == "running" && t.3.is_some()))
            .then_some(t)
    })
    .await
}

fn attempt_alive(pid: i32, attempt: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|b| *b == 0)
            .any(|kv| kv == format!("BORG_ATTEMPT={attempt}").as_bytes())
    })
}

async fn submit_service(cell: &Cell, alive: &Alive, name: &str, replicas: u32) {
    let spec = json!({"name": name, "kind": "service", "replicas": replicas, "task": {
        "command": alive.command(), "resources": {"cpu": "10m", "memory": "4Mi"}}});
    let (status, body) = cell.post("/v1/jobs", spec).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn scale_a_service_up_then_down_stopping_the_highest_indexes() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    submit_service(&cell, &alive, "web", 3).await;
    running(&cell, "web", 0..3).await;

    let (ok, out) = jobctl(&cell, &["scale", "web", "5"]);
    assert!(ok, "{out}");
    assert!(out.contains("scaled to 5 replicas"), "{out}");
    let five = running(&cell, "web", 0..5).await;
    assert_eq!(five.len(), 5);

    let (ok, out) = jobctl(&cell, &["scale", "web", "2"]);
    assert!(ok, "{out}");
    let after = wait_for("tasks 2..5 killed", Duration::from_secs(30), || async {
        let t = tasks(&cell, "web").await?;
        (2..5).all(|i| t[&i].0 == "killed").then_some(t)
    })
    .await;
    for i in 0..2 {
        assert_eq!(after[&i].0, "running", "task {i}");
        assert_eq!(after[&i].2, five[&i].2, "task {i} was disturbed");
    }
    wait_for(
        "the stopped copies gone",
        Duration::from_secs(30),
        || async {
            (2..5)
                .all(|i| !attempt_alive(five[&i].3.unwrap(), five[&i].2.as_deref().unwrap()))
                .then_some(())
        },
    )
    .await;
    let job = cell.get("/v1/jobs/web").await.unwrap();
    assert_eq!(job["replicas"], 2);
    assert_eq!(job["state"], "running");
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT e.reason FROM events e JOIN tasks t ON t.id = e.task_id
         WHERE t.index = 4 AND e.to_state = 'killed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].starts_with("scaled from 5 to 2"), "{reasons:?}");

    // What is refused, and says so.
    let (status, body) = cell
        .post("/v1/jobs/web/scale", json!({"replicas": 0}))
        .await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("replicas")));
    let (status, _) = cell
        .post("/v1/jobs/nope/scale", json!({"replicas": 2}))
        .await;
    assert_eq!(status, 404);
    // Growing back: index 2, ended by the scale-down, comes back as the same
    // task (its history kept) and runs again.
    let (ok, out) = jobctl(&cell, &["scale", "web", "3"]);
    assert!(ok, "{out}");
    let three = running(&cell, "web", 0..3).await;
    assert_ne!(three[&2].2, five[&2].2, "a new attempt at index 2");
    let task2: Vec<(String, String)> = sqlx::query_as(
        "SELECT coalesce(e.from_state, ''), e.to_state FROM events e JOIN tasks t ON t.id = e.task_id
         JOIN jobs j ON j.id = t.job_id
         WHERE j.name = 'web' AND t.index = 2 AND e.kind = 'task' ORDER BY e.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        task2
            .windows(2)
            .any(|w| w[0].1 == "killed" && w[1] == ("killed".into(), "pending".into())),
        "index 2's history: {task2:?}"
    );
    let job = cell.get("/v1/jobs/web").await.unwrap();
    assert_eq!(
        (job["replicas"].as_i64(), job["state"].as_str()),
        (Some(3), Some("running"))
    );
    let batch = json!({"name": "b", "task": {"command": alive.command(),
        "resources": {"cpu": "10m", "memory": "4Mi"}}});
    assert_eq!(cell.post("/v1/jobs", batch).await.0, 201);
    let (status, body) = cell.post("/v1/jobs/b/scale", json!({"replicas": 2})).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn drain_moves_a_machines_tasks_elsewhere_one_task_of_a_job_at_a_time() {
    let _serial = SERIAL.lock().await;
    let cell = Cell::start_with(flags()).await;
    let alive = Alive::new(cell.path());
    submit_service(&cell, &alive, "web", 4).await;
    let before = running(&cell, "web", 0..4).await;
    // The machine with the most of its tasks (at least 2 of 4 on 3 machines).
    let mut per: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (i, t) in &before {
        per.entry(t.1.clone().unwrap()).or_default().push(*i);
    }
    let (victim, moving) = per.into_iter().max_by_key(|(_, v)| v.len()).unwrap();
    assert!(moving.len() >= 2);
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let mark: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();

    let (ok, out) = jobctl(&cell, &["drain", &victim]);
    assert!(ok, "{out}");
    assert!(out.contains("draining"), "{out}");
    let after = wait_for(
        "every task running off the drained machine",
        Duration::from_secs(60),
        || async {
            let t = tasks(&cell, "web").await?;
            t.values()
                .all(|t| t.0 == "running" && t.1.as_deref() != Some(victim.as_str()))
                .then_some(t)
        },
    )
    .await;
    for i in &moving {
        assert_ne!(after[i].2, before[i].2, "task {i} kept its attempt");
    }
    wait_for(
        "the old copies stopped",
        Duration::from_secs(30),
        || async {
            moving
                .iter()
                .all(|i| !attempt_alive(before[i].3.unwrap(), before[i].2.as_deref().unwrap()))
                .then_some(())
        },
    )
    .await;

    // Replay the job's task events since the drain: never two tasks down at once.
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT t.index, e.to_state FROM events e JOIN tasks t ON t.id = e.task_id
         WHERE e.kind = 'task' AND e.id > $1 ORDER BY e.id",
    )
    .bind(mark)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut down: BTreeMap<i32, bool> = BTreeMap::new();
    let mut worst = 0;
    for (index, to) in &rows {
        down.insert(*index, to != "running");
        worst = worst.max(down.values().filter(|d| **d).count());
    }
    assert_eq!(worst, 1, "tasks down at once during the drain: {rows:?}");
    let machine = |v: Value| {
        v["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == victim.as_str())
            .cloned()
            .unwrap()
    };
    let m = machine(cell.get("/v1/machines").await.unwrap());
    assert_eq!(
        (m["state"].as_str(), m["tasks"].as_i64()),
        (Some("draining"), Some(0))
    );

    let (ok, out) = jobctl(&cell, &["uncordon", &victim]);
    assert!(ok, "{out}");
    let m = machine(cell.get("/v1/machines").await.unwrap());
    assert_eq!(m["state"], "up");
    let (status, _) = cell.post("/v1/machines/nope/drain", json!({})).await;
    assert_eq!(status, 404);
}

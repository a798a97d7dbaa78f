//! Health the borglets report, in the store against a real Postgres: the check
//! travels to the borglet in the desired set, each change of `healthy` is stored
//! on the attempt with an event, a report without a verdict changes nothing, and
//! `healthy_tasks` (what a rolling update waits on) follows.

mod helpers;

use borg_shared::wire::{AttemptReport, Capacity, ProbeKind};
use borg_shared::{AttemptId, Bytes, JobId, JobSpec, MachineId, MilliCpu, TaskId};
use borgmaster::store::{Placement, Store};
use chrono::Utc;
use helpers::{leader_epoch, spawn_app};

async fn machine(store: &Store) -> MachineId {
    borgmaster::store::fixtures::test_machine(store, "m1")
        .await
        .unwrap()
}

async fn place_all(store: &Store, m: MachineId) {
    let rows: Vec<(TaskId, JobId)> =
        sqlx::query_as("SELECT id, job_id FROM tasks WHERE state = 'pending' ORDER BY index")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let batch: Vec<Placement> = rows
        .into_iter()
        .map(|(task, job)| Placement {
            task,
            job,
            machine: m,
            request: Capacity {
                cpu: MilliCpu(100),
                memory: Bytes(64 << 20),
                disk: Bytes(0),
            },
            max_per_machine: None,
            ports: vec![],
        })
        .collect();
    let placed = store.commit_placements("test", &batch).await.unwrap();
    assert_eq!(placed.placed.len(), batch.len());
}

fn running(id: AttemptId, healthy: Option<bool>, message: Option<&str>) -> AttemptReport {
    let mut r: AttemptReport = serde_json::from_value(serde_json::json!({
        "id": id, "phase": "running", "pid": 4242, "started_at": Utc::now()
    }))
    .unwrap();
    r.healthy = healthy;
    r.health_message = message.map(str::to_string);
    r
}

async fn job_id(store: &Store, name: &str) -> JobId {
    sqlx::query_scalar("SELECT id FROM jobs WHERE name = $1")
        .bind(name)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn health_events(store: &Store) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT reason FROM events WHERE kind = 'task' AND from_state = 'running'
           AND to_state = 'running' ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn health_changes_are_stored_with_an_event_and_decide_healthy_tasks() {
    let app = spawn_app().await;
    let store = &app.store;
    let m = machine(store).await;
    for json in [
        r#"{"name": "web", "kind": "service", "replicas": 2, "task": {"command": ["x"],
            "health": {"exec": {"command": ["test", "-f", "ok"]}, "interval": "1s"}}}"#,
        r#"{"name": "plain", "kind": "service", "task": {"command": ["x"]}}"#,
    ] {
        store
            .submit(&JobSpec::from_json(json.as_bytes()).unwrap())
            .await
            .unwrap();
    }
    place_all(store, m).await;
    let (wanted, new) = store.desired_attempts(m).await.unwrap();
    let web: Vec<AttemptId> = wanted
        .iter()
        .filter(|s| s.job == "web")
        .map(|s| s.id)
        .collect();
    for s in &wanted {
        match s.job.as_str() {
            "web" => {
                let h = s
                    .health
                    .as_ref()
                    .expect("the check travels with the attempt");
                assert_eq!(
                    h.probe,
                    ProbeKind::Exec {
                        command: vec!["test".into(), "-f".into(), "ok".into()]
                    }
                );
                assert_eq!((h.interval_ms, h.timeout_ms, h.failures), (1000, 1000, 3));
            }
            _ => assert_eq!(s.health, None),
        }
    }
    store
        .mark_starting(m, leader_epoch(store).await, &new)
        .await
        .unwrap();
    let (web_job, plain_job) = (job_id(store, "web").await, job_id(store, "plain").await);
    let ids: Vec<AttemptId> = wanted.iter().map(|s| s.id).collect();
    let report = |reports: Vec<AttemptReport>| {
        let ids = ids.clone();
        async move {
            store
                .apply_report(m, "m1", leader_epoch(store).await, &ids, &reports)
                .await
                .unwrap()
        }
    };

    // Running, no verdict yet: a task with a check is not healthy yet.
    report(ids.iter().map(|id| running(*id, None, None)).collect()).await;
    assert_eq!(
        store.healthy_tasks(web_job).await.unwrap(),
        Vec::<i32>::new()
    );
    assert_eq!(store.healthy_tasks(plain_job).await.unwrap(), vec![0]);
    assert!(health_events(store).await.is_empty());

    report(vec![running(web[0], Some(true), None)]).await;
    report(vec![running(web[0], Some(true), None)]).await;
    assert_eq!(store.healthy_tasks(web_job).await.unwrap(), vec![0]);
    assert_eq!(
        health_events(store).await,
        vec!["healthy"],
        "one event per change"
    );

    // A failing probe below the threshold: the verdict stands, the message is kept.
    report(vec![running(web[0], Some(true), Some("refused"))]).await;
    // No verdict (a new run): nothing changes.
    report(vec![running(web[0], None, None)]).await;
    let (_, job) = app.get_json("/v1/jobs/web").await;
    assert_eq!(job["tasks"][0]["healthy"], true, "{job}");
    assert_eq!(job["tasks"][0]["health_message"], "refused", "{job}");
    assert_eq!(health_events(store).await.len(), 1);

    report(vec![running(
        web[0],
        Some(false),
        Some("health check failed: refused (3 probes in a row)"),
    )])
    .await;
    assert_eq!(
        store.healthy_tasks(web_job).await.unwrap(),
        Vec::<i32>::new()
    );
    assert_eq!(
        health_events(store).await,
        vec![
            "healthy",
            "unhealthy: health check failed: refused (3 probes in a row)"
        ]
    );
    let (_, job) = app.get_json("/v1/jobs/web").await;
    assert_eq!(job["tasks"][0]["healthy"], false, "{job}");
    assert!(job["tasks"][1].get("healthy").is_none(), "{job}");

    // Restarted in place: the attempt shows the new run's pid.
    let mut new_run = running(web[0], None, None);
    new_run.pid = Some(5151);
    report(vec![new_run]).await;
    let (_, job) = app.get_json("/v1/jobs/web").await;
    assert_eq!(job["tasks"][0]["pid"], 5151, "{job}");
}

//! History retention through the leader's own loop: a finished job is readable
//! until its retention passes, then collected; a live job is never touched; the
//! name takes a new job at once.

mod helpers;

use borgmaster::leader::LeaderConfig;
use helpers::spawn_app_leading;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_leader_collects_finished_jobs_after_the_retention_and_keeps_live_ones() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    let leader = LeaderConfig {
        history_retention: Duration::from_secs(2),
        ..Default::default()
    };
    let app = spawn_app_leading(&url, Duration::from_millis(200), leader).await;
    for name in ["gone", "live"] {
        let (status, body) = app
            .post_json(
                "/v1/jobs",
                json!({"name": name, "task": {"command": ["/bin/true"]}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = app.post_json("/v1/jobs/gone/kill", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let gone_id = body["id"].as_str().unwrap().to_string();
    // Finished, it is still readable with its tasks and events.
    let (status, body) = app.get_json("/v1/jobs/gone").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "killed");
    assert_eq!(body["tasks"][0]["state"], "killed");
    assert!(!body["events"].as_array().unwrap().is_empty());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = app.get_json("/v1/jobs/gone").await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "never collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE job_id = $1::uuid)
              + (SELECT count(*) FROM tasks WHERE job_id = $1::uuid)",
    )
    .bind(&gone_id)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(left, 0, "nothing of the collected job is left");
    let (status, body) = app.get_json("/v1/jobs/live").await;
    assert_eq!((status, &body["state"]), (200, &json!("pending")), "{body}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("borg_history_deleted_rows_total{table=\"jobs\"} ")),
        "{metrics}"
    );
    // The name is free for a new job.
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            json!({"name": "gone", "task": {"command": ["/bin/true"]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["id"].as_str().unwrap(), gone_id);
}

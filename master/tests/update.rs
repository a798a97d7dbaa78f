//! `PUT /v1/jobs/{name}` and the rollout endpoints against a real master and
//! Postgres (no borglets: what an update stores and refuses; the rolling itself
//! is tested with a whole cell in `jobctl/tests/rollout.rs`).

mod helpers;

use helpers::{spawn_app, TestApp};
use serde_json::{json, Value};

fn web(replicas: i64, command: &str) -> Value {
    json!({"name": "web", "kind": "service", "replicas": replicas,
           "task": {"command": ["/bin/sh", "-c", command], "resources": {"cpu": "10m", "memory": "4Mi"}}})
}

async fn put(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let resp = app
        .http
        .put(format!("{}{path}", app.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn rollout_events(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT reason FROM events WHERE kind = 'job' AND reason LIKE 'rollout: %' ORDER BY id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn an_update_stores_a_version_and_starts_a_rollout() {
    let app = spawn_app().await;
    assert_eq!(app.post_json("/v1/jobs", web(3, "sleep 100")).await.0, 201);
    let (status, body) = app.get_json("/v1/jobs/web/rollout").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["target_version"].as_i64()),
        (Some("done"), Some(1))
    );

    // The same spec: nothing new.
    let (status, body) = put(&app, "/v1/jobs/web", web(3, "sleep 100")).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(app.count("job_versions").await, 1);

    let (status, body) = put(&app, "/v1/jobs/web", web(3, "sleep 200")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["spec"]["task"]["command"][2], "sleep 200");
    assert_eq!(app.count("job_versions").await, 2);
    let (_, r) = app.get_json("/v1/jobs/web/rollout").await;
    assert_eq!(r["state"], "rolling", "{r}");
    assert_eq!(
        (r["from_version"].as_i64(), r["to_version"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (r["total"].as_i64(), r["max_unavailable"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!(r["min_healthy_ms"], 5000);
    let events = rollout_events(&app).await;
    assert!(
        events[0].starts_with("rollout: updated to version 2 (from 1)"),
        "{events:?}"
    );

    // Retrying the same update is safe.
    let (status, body) = put(&app, "/v1/jobs/web", web(3, "sleep 200")).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)));
    assert_eq!(app.count("job_versions").await, 2);

    // Pause, resume, undo.
    let (status, r) = app.post_json("/v1/jobs/web/rollout/pause", json!({})).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("paused")), "{r}");
    let (status, r) = app.post_json("/v1/jobs/web/rollout/pause", json!({})).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("paused")), "{r}");
    let (status, r) = app
        .post_json("/v1/jobs/web/rollout/resume", json!({}))
        .await;
    assert_eq!((status, r["state"].as_str()), (200, Some("rolling")), "{r}");
    let (status, r) = app.post_json("/v1/jobs/web/rollout/undo", json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["state"].as_str(), r["target_version"].as_i64()),
        (Some("rolling_back"), Some(1))
    );
    let (_, job) = app.get_json("/v1/jobs/web").await;
    assert_eq!(
        (job["version"].as_i64(), &job["spec"]["task"]["command"][2]),
        (Some(1), &json!("sleep 100"))
    );
    let (status, body) = app.post_json("/v1/jobs/web/rollout/undo", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to undo"),
        "{body}"
    );
    let events = rollout_events(&app).await;
    for said in [
        "paused by default (token bootstrap)",
        "resumed by default (token bootstrap)",
        "undone by default (token bootstrap): rolling back to version 1",
    ] {
        assert!(
            events.iter().any(|e| e.contains(said)),
            "{said}: {events:?}"
        );
    }
    let (status, _) = app.get_json("/v1/jobs/nope/rollout").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_new_replica_count_alone_is_a_scale() {
    let app = spawn_app().await;
    assert_eq!(app.post_json("/v1/jobs", web(2, "sleep 100")).await.0, 201);
    let (status, body) = put(&app, "/v1/jobs/web", web(4, "sleep 100")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["replicas"].as_i64(), body["version"].as_i64()),
        (Some(4), Some(1))
    );
    assert_eq!(app.count("tasks").await, 4);
    assert_eq!(app.count("job_versions").await, 1);
    assert_eq!(app.count("rollouts").await, 0);
    let scaled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE kind = 'job' AND reason = 'scaled from 2 to 4 replicas'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(scaled, 1);

    // The update policy alone: kept, no version, nothing to roll.
    let mut policy = web(4, "sleep 100");
    policy["update"] = json!({"max_unavailable": 2, "min_healthy": "1s"});
    let (status, body) = put(&app, "/v1/jobs/web", policy).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(body["spec"]["update"]["max_unavailable"], 2);
    assert_eq!(app.count("rollouts").await, 0);
    let (_, r) = app.get_json("/v1/jobs/web/rollout").await;
    assert_eq!(
        (r["max_unavailable"].as_i64(), r["min_healthy_ms"].as_i64()),
        (Some(2), Some(1000))
    );

    // Replicas and the template together: a scale, then a new version of that size.
    let (status, body) = put(&app, "/v1/jobs/web", web(3, "sleep 300")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["replicas"].as_i64(), body["version"].as_i64()),
        (Some(3), Some(2))
    );
}

#[tokio::test]
async fn what_an_update_may_not_do_is_refused_and_says_why() {
    let app = spawn_app().await;
    assert_eq!(app.post_json("/v1/jobs", web(2, "sleep 100")).await.0, 201);
    let batch = json!({"name": "b", "task": {"command": ["sleep", "100"]}});
    assert_eq!(app.post_json("/v1/jobs", batch.clone()).await.0, 201);

    let mut changed = batch.clone();
    changed["task"]["command"] = json!(["sleep", "200"]);
    let (status, body) = put(&app, "/v1/jobs/b", changed).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch job is not updated in place"),
        "{body}"
    );

    let mut kind = web(2, "sleep 100");
    kind["kind"] = json!("batch");
    let (status, body) = put(&app, "/v1/jobs/web", kind).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("kind")),
        "{body}"
    );
    let mut owner = web(2, "sleep 100");
    owner["owner"] = json!("bob");
    let (status, body) = put(&app, "/v1/jobs/web", owner).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("owner")),
        "{body}"
    );
    let mut renamed = web(2, "sleep 100");
    renamed["name"] = json!("other");
    let (status, body) = put(&app, "/v1/jobs/web", renamed).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    // A path that names no job the caller may see: 404, whatever the body.
    let (status, body) = put(&app, "/v1/jobs/other", web(2, "sleep 100")).await;
    assert_eq!(status, 404, "{body}");

    // A rollout must be able to move: nothing down and nothing extra is refused.
    for policy in [
        json!({"max_unavailable": 0}),
        json!({"max_unavailable": 0, "max_surge": 0}),
    ] {
        let mut zero = web(2, "sleep 100");
        zero["update"] = policy;
        let (status, body) = put(&app, "/v1/jobs/web", zero).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("update.max_unavailable")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("unless `max_surge` is"), "{message}");
    }
    let mut batch_policy = batch.clone();
    batch_policy["update"] = json!({"max_unavailable": 1});
    let (status, body) = app.post_json("/v1/jobs", batch_policy).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("update")),
        "{body}"
    );

    let (status, body) = put(
        &app,
        "/v1/jobs/nope",
        json!({"name": "nope", "task": {"command": ["true"]}}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.post_json("/v1/jobs/web/rollout/pause", json!({})).await;
    assert_eq!(status, 409, "never updated: {body}");
    assert_eq!(
        app.count("job_versions").await,
        2,
        "nothing refused was stored"
    );

    // A surging policy is built: accepted, and the rollout shows its budget.
    let mut surge = web(2, "sleep 300");
    surge["update"] = json!({"max_unavailable": 0, "max_surge": 1});
    let (status, body) = put(&app, "/v1/jobs/web", surge).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    let (_, r) = app.get_json("/v1/jobs/web/rollout").await;
    assert_eq!(
        (
            r["max_unavailable"].as_i64(),
            r["max_surge"].as_i64(),
            r["surging"].as_i64()
        ),
        (Some(0), Some(1), Some(0)),
        "{r}"
    );
}

#[tokio::test]
async fn the_openapi_document_has_the_update_and_rollout_operations() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let op = |path: &str, method: &str| doc["paths"][path][method]["operationId"].clone();
    assert_eq!(op("/v1/jobs/{name}", "put"), "update_job");
    assert_eq!(op("/v1/jobs/{name}", "get"), "get_job");
    assert_eq!(op("/v1/jobs/{name}/rollout", "get"), "get_rollout");
    for action in ["pause", "resume", "undo"] {
        let path = format!("/v1/jobs/{{name}}/rollout/{action}");
        assert_eq!(op(&path, "post"), format!("{action}_rollout"));
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["RolloutView"].is_object() && schemas["RolloutState"].is_object());
}

/// A killed job's rollout no longer reads `rolling`: it ends `aborted`, with
/// why, and an event says so; its controls then answer 409.
#[tokio::test]
async fn a_killed_jobs_rollout_ends_aborted() {
    let app = spawn_app().await;
    assert_eq!(app.post_json("/v1/jobs", web(2, "sleep 100")).await.0, 201);
    let (status, body) = put(&app, "/v1/jobs/web", web(2, "sleep 200")).await;
    assert_eq!(status, 200, "{body}");
    let (_, r) = app.get_json("/v1/jobs/web/rollout").await;
    assert_eq!(r["state"], "rolling", "{r}");

    let (status, body) = app.post_json("/v1/jobs/web/kill", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, r) = app.get_json("/v1/jobs/web/rollout").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["state"], "aborted", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("job killed: killed by"), "{reason}");
    let events = rollout_events(&app).await;
    assert!(
        events
            .last()
            .is_some_and(|e| e.starts_with("rollout: aborted: job killed")),
        "{events:?}"
    );
    let (status, _) = app
        .post_json("/v1/jobs/web/rollout/resume", json!({}))
        .await;
    assert_eq!(status, 409);
}

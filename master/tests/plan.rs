//! `POST /v1/plan` against a real master and Postgres: the submit's checks,
//! the scheduler's placement over the registered machines, the diff against
//! a live job, and not one row written (not even in the audit log: a dry run
//! changes nothing).

mod helpers;

use helpers::spawn_app;
use serde_json::{json, Value};

const TABLES: [&str; 6] = [
    "jobs",
    "tasks",
    "attempts",
    "events",
    "job_versions",
    "audit_log",
];

async fn counts(app: &helpers::TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(app.count(t).await);
    }
    out
}

fn machine(name: &str, zone: &str, memory: u64) -> Value {
    json!({"name": name, "address": format!("http://127.0.0.1:{}", 9),
           "labels": {"zone": zone},
           "capacity": {"cpu": 2000, "memory": memory, "disk": 0}})
}

#[tokio::test]
async fn plan_places_explains_diffs_and_writes_nothing() {
    let app = spawn_app().await;
    for m in [machine("m1", "a", 1 << 30), machine("m2", "b", 4 << 30)] {
        assert_eq!(app.post_json("/v1/machines", m).await.0, 201);
    }
    let (s, _) = app
        .post_json(
            "/v1/jobs",
            json!({"name": "svc", "kind": "service", "task": {"command": ["sleep", "600"]}}),
        )
        .await;
    assert_eq!(s, 201);
    let before = counts(&app).await;

    // A new job: every task gets a machine, the big ones only the big machine.
    let (s, v) = app
        .post_json(
            "/v1/plan",
            json!({"name": "new", "replicas": 2,
                   "task": {"command": ["/bin/true"], "resources": {"memory": "2Gi"}}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_bool(), v["action"].as_str()),
        (Some(true), Some("create")),
        "{v}"
    );
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{v}");
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t["index"], i, "{v}");
        assert_eq!(
            (t["outcome"].as_str(), t["machine"].as_str()),
            (Some("place"), Some("m2")),
            "{v}"
        );
    }

    // Nowhere to go: it would wait, and says why.
    let (s, v) = app
        .post_json(
            "/v1/plan",
            json!({"name": "picky", "constraints": [{"label": "zone", "op": "=", "value": "c"}],
                   "task": {"command": ["/bin/true"]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tasks"][0]["outcome"], "wait", "{v}");
    assert!(
        v["tasks"][0]["reason"].as_str().unwrap().contains("zone"),
        "{v}"
    );

    // A live service: a new command is a new version, with the diff.
    let (s, v) = app
        .post_json(
            "/v1/plan",
            json!({"name": "svc", "kind": "service", "task": {"command": ["sleep", "700"]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["action"].as_str(), v["current_version"].as_i64()),
        (Some("update"), Some(1)),
        "{v}"
    );
    let diff = v["diff"].as_str().unwrap();
    assert!(
        diff.contains("-  - '600'") && diff.contains("+  - '700'"),
        "{diff}"
    );
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
    // The same spec: nothing to do.
    let (_, v) = app
        .post_json(
            "/v1/plan",
            json!({"name": "svc", "kind": "service", "task": {"command": ["sleep", "600"]}}),
        )
        .await;
    assert_eq!(
        (v["action"].as_str(), v["tasks"].as_array().map(Vec::len)),
        (Some("unchanged"), Some(0)),
        "{v}"
    );
    // A kind change on a live job would be refused, and says which field.
    let (s, v) = app
        .post_json(
            "/v1/plan",
            json!({"name": "svc", "kind": "batch", "task": {"command": ["sleep", "600"]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_bool(), v["refusal"]["field"].as_str()),
        (Some(false), Some("kind")),
        "{v}"
    );

    // Invalid: the submit's 422, naming the field.
    let (s, v) = app
        .post_json(
            "/v1/plan",
            json!({"name": "bad", "replicas": -1, "task": {"command": ["x"]}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("replicas")),
        "{v}"
    );
    let resp = app
        .http
        .post(format!("{}/v1/plan", app.url))
        .body("name: yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);

    assert_eq!(counts(&app).await, before, "rows in {TABLES:?}");
}

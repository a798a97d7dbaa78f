//! The REST API against a real master and a real Postgres.

mod helpers;

use helpers::spawn_app;
use serde_json::json;

fn hello(replicas: i64) -> serde_json::Value {
    json!({"name": "hello", "replicas": replicas,
           "task": {"command": ["/bin/echo", "hi"], "resources": {"cpu": "250m", "memory": "64Mi"}}})
}

#[tokio::test]
async fn submit_commits_job_tasks_and_events() {
    let app = spawn_app().await;
    let (status, body) = app.post_json("/v1/jobs", hello(3)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "hello");
    assert_eq!(body["state"], "pending");
    assert!(
        body.get("tasks").is_none(),
        "the answer is the summary: {body}"
    );
    assert_eq!(body["task_counts"]["pending"], 3);
    assert_eq!(app.count("tasks").await, 3);
    // One event per task and one for the job.
    assert_eq!(app.count("events").await, 4);

    // Same spec again: safe retry, nothing new stored.
    let (status, _) = app.post_json("/v1/jobs", hello(3)).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("jobs").await, 1);
    // Same name, different spec: conflict.
    let (status, body) = app.post_json("/v1/jobs", hello(4)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(app.count("tasks").await, 3);

    let (status, body) = app.get_json("/v1/jobs/hello").await;
    assert_eq!(status, 200);
    assert_eq!(body["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
    assert!(body.get("tasks_next").is_none());

    // Tasks come in pages by index.
    let (_, page) = app.get_json("/v1/jobs/hello?tasks_limit=2").await;
    let indexes: Vec<i64> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["index"].as_i64().unwrap())
        .collect();
    assert_eq!(
        (indexes, page["tasks_next"].as_i64()),
        (vec![0, 1], Some(1))
    );
    let (_, page) = app
        .get_json("/v1/jobs/hello?tasks_limit=2&tasks_after=1")
        .await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    assert!(page.get("tasks_next").is_none());
    let (status, err) = app.get_json("/v1/jobs/hello?tasks_limit=lots").await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("tasks_limit"))
    );
    let (status, _) = app.get_json("/v1/jobs/hello?tasks_limit=0").await;
    assert_eq!(status, 422);
    let (_, list) = app.get_json("/v1/jobs?state=pending").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    let (_, list) = app.get_json("/v1/jobs?state=running").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn bad_specs_get_422_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "Hello", "task": {"command": ["x"]}}), "name"),
        (
            json!({"name": "a", "replicas": 0, "task": {"command": ["x"]}}),
            "replicas",
        ),
        (
            json!({"name": "a", "task": {"command": []}}),
            "task.command",
        ),
        (
            json!({"name": "a", "extra": true, "task": {"command": ["x"]}}),
            "extra",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"memory": "lots"}}}),
            "task.resources.memory",
        ),
        (
            json!({"name": "a", "priority": 5000, "task": {"command": ["x"]}}),
            "priority",
        ),
    ];
    for (spec, field) in cases {
        let (status, body) = app.post_json("/v1/jobs", spec.clone()).await;
        assert_eq!(status, 422, "{spec} -> {body}");
        assert_eq!(body["error"]["code"], "invalid_spec");
        assert_eq!(body["error"]["field"], field, "{spec} -> {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let resp = app
        .http
        .post(format!("{}/v1/jobs", app.url))
        .header("content-type", "application/json")
        .body("{\"name\": \"a\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    assert_eq!(app.count("jobs").await, 0);
    assert_eq!(app.count("tasks").await, 0);
    assert_eq!(app.count("events").await, 0);
}

#[tokio::test]
async fn unknown_things_are_404_with_the_error_body() {
    let app = spawn_app().await;
    for path in ["/v1/jobs/nope", "/v1/jobs/nope/tasks/0/logs", "/v1/nothing"] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let (status, _) = app.post_json("/v1/jobs/nope/kill", json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = app.get_json("/v1/jobs?state=bogus").await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn kill_ends_pending_tasks_and_refuses_a_second_time() {
    let app = spawn_app().await;
    app.post_json("/v1/jobs", hello(2)).await;
    let (status, body) = app.post_json("/v1/jobs/hello/kill", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "killed");
    assert_eq!(body["task_counts"]["killed"], 2);
    let (status, body) = app.post_json("/v1/jobs/hello/kill", json!({})).await;
    assert_eq!(status, 409, "{body}");
    // The name is free again once the job is over.
    let (status, _) = app.post_json("/v1/jobs", hello(1)).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn machines_register_idempotently_and_validate() {
    let app = spawn_app().await;
    let m = json!({"name": "m1", "address": "http://127.0.0.1:1", "labels": {"zone": "a"},
                   "capacity": {"cpu": 2000, "memory": 1073741824u64, "disk": 0}});
    let (status, body) = app.post_json("/v1/machines", m.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, again) = app.post_json("/v1/machines", m).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], again["id"]);
    let (_, list) = app.get_json("/v1/machines").await;
    assert_eq!(list["machines"][0]["labels"]["zone"], "a");
    assert_eq!(list["machines"][0]["state"], "up");
    let (status, body) = app
        .post_json("/v1/machines", json!({"name": "m2", "address": "nope", "capacity": {"cpu": 1, "memory": 1, "disk": 1}}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "address");
}

#[tokio::test]
async fn metrics_show_state_gauges_from_the_store() {
    let app = spawn_app().await;
    app.post_json("/v1/jobs", hello(3)).await;
    let resp = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    // The only test in this binary that scrapes, so the gauges are this app's.
    assert!(text.contains("borg_tasks{state=\"pending\"} 3"), "{text}");
    assert!(text.contains("borg_jobs{state=\"pending\"} 1"), "{text}");
    assert!(text.contains("borg_jobs_submitted_total"), "{text}");
    // Requests are timed by route template, method and status, in buckets.
    let submit = "borg_api_request_duration_seconds_count{route=\"/v1/jobs\",method=\"POST\",status=\"201\"}";
    assert!(text.contains(submit), "{text}");
    assert!(
        text.contains("borg_api_request_duration_seconds_bucket{route=\"/v1/jobs\",method=\"POST\",status=\"201\",le=\"0.005\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn openapi_document_is_generated_from_the_handlers() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["info"]["title"], "borgmaster");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/v1/jobs",
        "/v1/jobs/{name}",
        "/v1/jobs/{name}/kill",
        "/v1/jobs/{name}/tasks/{index}/logs",
        "/v1/machines",
        "/v1/machines/{name}/nudge",
        "/healthz",
        "/metrics",
        "/v1/events",
        "/v1/resolve/{job}",
        "/",
    ] {
        assert!(paths.contains_key(path), "missing path {path}");
    }
    let submit = &doc["paths"]["/v1/jobs"]["post"];
    assert_eq!(
        submit["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/JobSpec"
    );
    for status in ["200", "201", "400", "409", "422"] {
        assert!(submit["responses"].get(status).is_some(), "submit {status}");
    }

    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["JobSpec", "JobView", "ErrorBody"] {
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
    let required: Vec<&str> = schemas["JobSpec"]["required"]
        .as_array()
        .expect("JobSpec.required")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        required.contains(&"name") && required.contains(&"task"),
        "{required:?}"
    );
    // Quantities are strings (or numbers of cores) on the wire, not the integers
    // they are stored as, with the pattern the server enforces.
    let cpu = &schemas["Resources"]["properties"]["cpu"]["anyOf"];
    assert_eq!(cpu[0]["type"], "string");
    assert_eq!(cpu[0]["pattern"], borg_shared::spec::bounds::CPU_PATTERN);
    assert_eq!(cpu[1]["type"], "number");

    // Every reference resolves and operation ids are unique.
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate operationId");
}

#[tokio::test]
async fn quotas_read_unlimited_until_set_and_refuse_bad_input() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/v1/quotas/alice").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["production"].get("limit").is_none(), "{body}");
    let put = |body: serde_json::Value| {
        let http = app.http.clone();
        let url = format!("{}/v1/quotas/alice", app.url);
        async move {
            let resp = http.put(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = put(json!({"production": {"cpu": "10", "memory": "64Gi"}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["production"]["limit"],
        json!({"cpu": "10", "memory": "64Gi"})
    );
    assert!(body["batch"].get("limit").is_none(), "{body}");
    let (status, body) = put(json!({"prod": {"cpu": "1"}})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = put(json!({"batch": {"cpu": "-1"}})).await;
    assert_eq!(status, 422, "{body}");
    // Bad input changed nothing.
    let (_, body) = app.get_json("/v1/quotas/alice").await;
    assert_eq!(body["production"]["limit"]["cpu"], "10");
}

#[tokio::test]
async fn fence_after_is_accepted_from_one_second() {
    let app = spawn_app().await;
    let spec = |fence: &str| {
        json!({"name": "fenced", "kind": "service",
            "task": {"command": ["/bin/true"], "fence_after": fence}})
    };
    let (status, body) = app.post_json("/v1/jobs", spec("500ms")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "task.fence_after");
    let (status, body) = app.post_json("/v1/jobs", spec("30s")).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn fields_not_built_yet_are_refused_not_ignored() {
    let app = spawn_app().await;
    let cases = [("task.health", "batch", json!({"tcp": {"port": 0}}))];
    for (field, kind, value) in cases {
        let key = field.strip_prefix("task.").unwrap();
        let mut spec = json!({"name": "svc", "kind": kind,
            "task": {"command": ["/bin/true"], "resources": {"ports": 1}}});
        spec["task"][key] = value;
        let (status, body) = app.post_json("/v1/jobs", spec).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(body["error"]["field"], field);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("not supported yet"),
            "{body}"
        );
    }
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn a_service_health_check_is_accepted_and_a_bad_one_names_its_field() {
    let app = spawn_app().await;
    let spec = json!({"name": "web", "kind": "service", "task": {"command": ["/bin/true"],
        "resources": {"ports": 1}, "health": {"tcp": {"port": 1}}}});
    let (status, body) = app.post_json("/v1/jobs", spec.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "task.health.tcp.port");
    let mut good = spec;
    good["task"]["health"] = json!({"tcp": {"port": 0}, "interval": "1s"});
    let (status, body) = app.post_json("/v1/jobs", good).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spec"]["task"]["health"]["interval"], "1s");
}

//! Hostile input against a real master and Postgres: bodies past the cap, other
//! content types, deep documents, specs and registrations past their bounds,
//! names that no row can have, paginated lists, and the submit rate limit.
//! Every refusal answers our error body, never a 5xx.

mod helpers;

use borg_shared::spec::bounds;
use borgmaster::api::LimitsConfig;
use helpers::{spawn_app, spawn_app_limited, TestApp};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{json, Value};
use std::collections::HashSet;

fn spec(name: &str) -> Value {
    json!({"name": name, "task": {"command": ["/bin/true"]}})
}

/// A raw request: `(status, code of our error body)`; a body that is not ours fails.
async fn send(app: &TestApp, req: reqwest::RequestBuilder) -> (u16, String) {
    let _ = app;
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status < 500, "answered {status}: {body}");
    if status >= 400 {
        assert!(ctype.starts_with("application/json"), "{status}: {ctype}");
        let code = body["error"]["code"].as_str();
        assert!(code.is_some(), "{status} without our error body: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

#[tokio::test]
async fn bodies_past_the_cap_answer_413_and_other_types_415() {
    let app = spawn_app().await;
    let post = |path: &str| app.http.post(format!("{}{path}", app.url));
    // 1.5 MiB of otherwise valid JSON.
    let mut big = spec("big");
    big["task"]["env"] = json!({"PAD": "x".repeat(1536 * 1024)});
    let (s, code) = send(&app, post("/v1/jobs").json(&big)).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));
    let (s, code) = send(&app, post("/v1/machines").json(&big)).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));
    let put = app.http.put(format!("{}/v1/quotas/alice", app.url));
    let (s, _) = send(
        &app,
        put.json(&json!({"batch": {"cpu": "1"}, "pad": "x".repeat(2 << 20)})),
    )
    .await;
    assert_eq!(s, 413);

    let body = spec("typed").to_string();
    for ctype in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/yaml",
    ] {
        let req = post("/v1/jobs")
            .header(CONTENT_TYPE, ctype)
            .body(body.clone());
        let (s, code) = send(&app, req).await;
        assert_eq!(
            (s, code.as_str()),
            (415, "unsupported_media_type"),
            "{ctype}"
        );
        let req = post("/v1/jobs/typed/scale")
            .header(CONTENT_TYPE, ctype)
            .body("{\"replicas\":2}");
        assert_eq!(send(&app, req).await.0, 415, "{ctype}");
    }
    let (s, _) = send(&app, post("/v1/jobs").body(body.clone())).await;
    assert_eq!(s, 415, "no content type at all");
    assert_eq!(app.count("jobs").await, 0, "nothing refused was committed");
    let req = post("/v1/jobs")
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body);
    assert_eq!(send(&app, req).await.0, 201);
}

#[tokio::test]
async fn deep_or_broken_documents_are_refused_quickly() {
    let app = spawn_app().await;
    let post = || {
        app.http
            .post(format!("{}/v1/jobs", app.url))
            .header(CONTENT_TYPE, "application/json")
    };
    let deep = format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000));
    let nested = format!(
        "{{\"name\":\"d\",\"task\":{{\"command\":{}\"x\"{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for body in [
        deep,
        nested,
        "{".repeat(500_000),
        "{\"name\":".into(),
        "\u{0}".into(),
    ] {
        let (s, code) = send(&app, post().body(body)).await;
        assert!(s == 400 || s == 422, "{s} {code}");
    }
    let register = app
        .http
        .post(format!("{}/v1/machines", app.url))
        .header(CONTENT_TYPE, "application/json");
    let (s, _) = send(
        &app,
        register.body(format!("{{\"labels\":{}", "{\"a\":".repeat(100_000))),
    )
    .await;
    assert!(s == 400 || s == 422, "{s}");
}

#[tokio::test]
async fn specs_past_their_bounds_are_422_naming_the_field() {
    let app = spawn_app().await;
    let task = |t: Value| json!({"name": "b", "task": t});
    let args: Vec<String> = (0..1025).map(|i| i.to_string()).collect();
    let env: serde_json::Map<String, Value> =
        (0..257).map(|i| (format!("V{i}"), json!("1"))).collect();
    let cases = [
        (task(json!({"command": args})), "task.command"),
        (
            task(json!({"command": ["x", "y".repeat(16385)]})),
            "task.command[1]",
        ),
        (task(json!({"command": ["x"], "env": env})), "task.env"),
        (
            task(json!({"command": ["x"], "env": {"1BAD": "v"}})),
            "task.env.1BAD",
        ),
        (
            task(json!({"command": ["x"], "env": {"BORG_PORT0": "1"}})),
            "task.env.BORG_PORT0",
        ),
        (
            task(json!({"command": ["x"], "resources": {"memory": "99999999Ti"}})),
            "task.resources.memory",
        ),
        (
            task(json!({"command": ["x"], "restart": {"max_attempts": 3_000_000_000u64}})),
            "task.restart.max_attempts",
        ),
        (
            json!({"name": "b", "replicas": 10_001, "task": {"command": ["x"]}}),
            "replicas",
        ),
        (
            json!({"name": "b", "task": {"command": ["x"]}, "constraints": [{"label": "zo\u{0}ne", "op": "exists"}]}),
            "constraints[0].label",
        ),
        (
            json!({"name": "b", "task": {"command": ["x"]}, "constraints": [{"label": "zone", "op": "=", "value": "a\u{0}"}]}),
            "constraints[0].value",
        ),
        (
            json!({"name": "b\u{0}", "task": {"command": ["x"]}}),
            "name",
        ),
        (
            json!({"name": "b", "owner": "al\u{0}ice", "task": {"command": ["x"]}}),
            "owner",
        ),
    ];
    for (spec, field) in cases {
        let (s, v) = app.post_json("/v1/jobs", spec).await;
        assert_eq!(s, 422, "{field}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn registrations_past_the_columns_or_with_bad_labels_are_422() {
    let app = spawn_app().await;
    let machine = |capacity: Value, labels: Value| json!({"name": "m1", "address": "http://127.0.0.1:1", "capacity": capacity, "labels": labels});
    let ok_cap = json!({"cpu": 1000, "memory": 1u64 << 30, "disk": 0});
    let cases = [
        (
            machine(json!({"cpu": u64::MAX, "memory": 1, "disk": 1}), json!({})),
            "capacity.cpu",
        ),
        (
            machine(
                json!({"cpu": 1, "memory": 1u64 << 63, "disk": 1}),
                json!({}),
            ),
            "capacity.memory",
        ),
        (
            machine(json!({"cpu": 1, "memory": 1, "disk": u64::MAX}), json!({})),
            "capacity.disk",
        ),
        (machine(ok_cap.clone(), json!({"zo\u{0}ne": "a"})), "labels"),
        (
            machine(ok_cap.clone(), json!({"zone": "a\u{0}"})),
            "labels.zone",
        ),
        (
            machine(ok_cap.clone(), json!({"zone": "x".repeat(64)})),
            "labels.zone",
        ),
        (
            json!({"name": "m1", "address": "http://127.0.0.1:1\u{0}", "capacity": ok_cap}),
            "address",
        ),
        (
            json!({"name": "m1", "address": "file:///etc/passwd", "capacity": ok_cap}),
            "address",
        ),
        (
            json!({"name": "m\u{0}", "address": "http://h:1", "capacity": ok_cap}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = app.post_json("/v1/machines", body.clone()).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, v) = app
        .post_json("/v1/machines", machine(ok_cap.clone(), Value::Object(many)))
        .await;
    assert_eq!((s, &v["error"]["field"]), (422, &json!("labels")));
    assert_eq!(app.count("machines").await, 0);
    let labels = json!({"zone": "a", "example.com/rack": "r-1.b_2", "empty": ""});
    let (s, v) = app.post_json("/v1/machines", machine(ok_cap, labels)).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn names_no_row_can_have_are_not_found_and_bad_queries_are_ours() {
    let app = spawn_app().await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.url));
    let post = |path: &str| app.http.post(format!("{}{path}", app.url));
    for path in [
        "/v1/jobs/a%00b",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/resolve/a%00",
    ] {
        assert_eq!(send(&app, get(path)).await.0, 404, "{path}");
    }
    let (s, code) = send(&app, get("/v1/jobs/%FF")).await;
    assert_eq!((s, code.as_str()), (400, "bad_request"), "not UTF-8");
    for path in [
        "/v1/jobs/a%00/kill",
        "/v1/machines/m%00/drain",
        "/v1/machines/m%00/uncordon",
    ] {
        assert_eq!(send(&app, post(path)).await.0, 404, "{path}");
    }
    let (s, _) = send(&app, post("/v1/machines/m%00/nudge").bearer_auth("x")).await;
    assert_eq!(s, 404);
    for path in [
        "/v1/events?job=a%00&follow=false",
        "/v1/events?machine=m%00&follow=false",
    ] {
        assert_eq!(send(&app, get(path)).await.0, 404, "{path}");
    }
    let (s, code) = send(&app, get("/v1/quotas/a%00b")).await;
    assert_eq!((s, code.as_str()), (422, "invalid_spec"));
    // Logs: a traversal in the name or the index, a bad index.
    for path in [
        "/v1/jobs/..%2F..%2Fetc/tasks/0/logs",
        "/v1/jobs/x/tasks/..%2F..%2Fetc%2Fpasswd/logs",
        "/v1/jobs/x/tasks/-1/logs",
        "/v1/jobs/x/tasks/0x1/logs",
        "/v1/jobs/x/tasks/0/logs?tail=-1",
        "/v1/jobs/x/tasks/0/logs?stream=..%2Fsecret",
    ] {
        let (s, _) = send(&app, get(path)).await;
        assert!(s == 404 || s == 422, "{path}: {s}");
    }
    for path in [
        "/v1/jobs?limit=abc",
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=1001",
        "/v1/jobs?after=nope",
        "/v1/machines?limit=-1",
        "/v1/jobs/x?tasks_limit=x",
    ] {
        assert_eq!(send(&app, get(path)).await.0, 422, "{path}");
    }
    let (s, code) = send(&app, get("/v1/jobs?limit=1&limit=2")).await;
    assert_eq!((s, code.as_str()), (400, "bad_request"));
}

#[tokio::test]
async fn lists_come_in_pages_that_cover_everything_once() {
    let app = spawn_app().await;
    for i in 0..7 {
        let (s, v) = app.post_json("/v1/jobs", spec(&format!("p{i}"))).await;
        assert_eq!(s, 201, "{v}");
    }
    let (_, all) = app.get_json("/v1/jobs").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 7);
    assert!(all.get("next").is_none(), "one page holds 7: {all}");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/jobs?limit=3&after={a}"),
            None => "/v1/jobs?limit=3".into(),
        };
        let (s, page) = app.get_json(&path).await;
        assert_eq!(s, 200, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 3);
        seen.extend(jobs.iter().map(|j| j["name"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..7).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(seen, want, "newest first, each once");
    let (_, pending) = app.get_json("/v1/jobs?state=pending&limit=5").await;
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 5);
    assert!(pending["next"].is_string());

    for i in 0..5 {
        let body = json!({"name": format!("m{i}"), "address": format!("http://127.0.0.1:{}", 1000 + i),
            "capacity": {"cpu": 1000, "memory": 1u64 << 30, "disk": 0}});
        assert_eq!(app.post_json("/v1/machines", body).await.0, 201);
    }
    let mut names = HashSet::new();
    let mut path = "/v1/machines?limit=2".to_string();
    loop {
        let (s, page) = app.get_json(&path).await;
        assert_eq!(s, 200);
        for m in page["machines"].as_array().unwrap() {
            assert!(
                names.insert(m["name"].as_str().unwrap().to_string()),
                "twice: {m}"
            );
        }
        match page["next"].as_str() {
            Some(n) => path = format!("/v1/machines?limit=2&after={n}"),
            None => break,
        }
    }
    assert_eq!(names.len(), 5);
}

#[tokio::test]
async fn submitting_past_the_rate_answers_429_per_caller() {
    let app = spawn_app_limited(LimitsConfig {
        submit_rate: 1,
        submit_burst: 3,
        ..Default::default()
    })
    .await;
    // Two users, each with a token of their own: the bucket is per caller.
    let mut secrets = Vec::new();
    for who in ["alice", "bob"] {
        let (status, body) = app
            .post_json(
                "/v1/tokens",
                json!({"name": who, "owner": who, "role": "user"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        secrets.push(body["secret"].as_str().unwrap().to_string());
    }
    let (alice, bob) = (secrets[0].clone(), secrets[1].clone());
    let submit = |token: &str, name: String| {
        app.http
            .post(format!("{}/v1/jobs", app.url))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&spec(&name))
    };
    // Far more than one a second refills: some are refused.
    let mut refused = None;
    for i in 0..20 {
        let resp = submit(&alice, format!("a{i}")).send().await.unwrap();
        if resp.status() == 429 {
            refused = Some(resp);
            break;
        }
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let resp = refused.expect("a burst of 20 at 1/s with a burst of 3 is limited");
    let wait: u64 = resp.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // A dry run draws on the same bucket: it costs what a submit costs.
    let plan = app
        .http
        .post(format!("{}/v1/plan", app.url))
        .header(AUTHORIZATION, format!("Bearer {alice}"))
        .json(&spec("p0"))
        .send()
        .await
        .unwrap();
    assert_eq!(plan.status(), 429);
    assert_eq!(
        app.metric("borg_api_rate_limited_total{route=\"plan\"}")
            .await,
        1.0
    );
    // Another caller has its own bucket; reads are not limited.
    assert_eq!(
        submit(&bob, "b0".into()).send().await.unwrap().status(),
        201
    );
    assert_eq!(app.get_json("/v1/jobs").await.0, 200);
}

#[tokio::test]
async fn the_document_states_the_limits() {
    let app = spawn_app().await;
    let (s, doc) = app.get_json("/openapi.json").await;
    assert_eq!(s, 200);
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi.json");
    std::fs::write(artifact, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let spec = &doc["components"]["schemas"]["JobSpec"]["properties"];
    assert_eq!(
        spec["name"]["pattern"],
        borg_shared::spec::bounds::NAME_PATTERN
    );
    assert_eq!(spec["replicas"]["maximum"], 10_000);
    let task = &doc["components"]["schemas"]["TaskTemplate"]["properties"];
    assert_eq!(task["command"]["maxItems"], 1024);
    assert_eq!(
        task["env"]["propertyNames"]["pattern"],
        borg_shared::spec::bounds::ENV_NAME_SCHEMA_PATTERN
    );
    let reg = &doc["components"]["schemas"]["RegisterMachine"]["properties"];
    assert_eq!(reg["labels"]["maxProperties"], 64);
    assert!(reg["capacity"]["properties"]["memory"]["maximum"].is_number());
    let submit = &doc["paths"]["/v1/jobs"]["post"]["responses"];
    for status in ["413", "415", "422", "429"] {
        assert!(submit[status].is_object(), "submit documents {status}");
    }
    // Every path parameter is required, as OpenAPI has it.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for op in item.as_object().unwrap().values() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{path}: {p}");
                }
                // The same patterns as the checks (the attributes take literals).
                if p["in"] == "path" && p["name"] == "name" {
                    assert_eq!(p["schema"]["pattern"], bounds::NAME_PATTERN, "{path}");
                }
                if p["name"] == "owner" {
                    assert_eq!(p["schema"]["pattern"], bounds::OWNER_PATTERN, "{path}");
                }
            }
        }
    }
    let params = doc["paths"]["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(
        names.contains(&"limit") && names.contains(&"after"),
        "{names:?}"
    );
}

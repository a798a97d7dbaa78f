//! The authorization matrix: every route of the OpenAPI document, called with
//! no token, a bad token, a revoked token, another owner's user token and the
//! right token, each answer checked. The routes come from the served document,
//! so a new route without a row here fails this test.

mod helpers;

use helpers::{client_with, spawn_app_leading, TestApp, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a route needs, as this test expects it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    /// No token; the same answer whoever calls.
    Public,
    /// Any valid token; another owner's job answers 404, as a missing one.
    OwnJob,
    /// Any valid token, no owner in play (or filtered lists).
    AnyToken,
    /// Another owner's token is refused (403) on this owner-named resource.
    SameOwner,
    Operator,
    Admin,
}

/// One route's call: what it needs, its concrete path and body, and what the
/// right caller gets.
struct Case {
    needs: Needs,
    path: String,
    body: Option<Value>,
    ok: u16,
}

fn case(needs: Needs, path: &str, body: Option<Value>, ok: u16) -> Case {
    Case {
        needs,
        path: path.to_string(),
        body,
        ok,
    }
}

/// Every operation id the master serves, with its case. Missing here: the test fails.
fn cases() -> BTreeMap<&'static str, Case> {
    use Needs::*;
    let machine = m1();
    let job = json!({"name": "sub-a", "task": {"command": ["/bin/true"]}});
    BTreeMap::from([
        ("dashboard", case(Public, "/", None, 200)),
        ("docs", case(Public, "/docs", None, 200)),
        ("healthz", case(Public, "/healthz", None, 200)),
        ("metrics", case(Public, "/metrics", None, 200)),
        // The borglets' own proof (join token or machine credential) decides
        // these, not API tokens: without it, 401 for every caller.
        (
            "register_machine",
            case(Public, "/v1/machines", Some(machine), 401),
        ),
        (
            "nudge_machine",
            case(Public, "/v1/machines/m1/nudge", None, 401),
        ),
        ("list_machines", case(AnyToken, "/v1/machines", None, 200)),
        (
            "drain_machine",
            case(Operator, "/v1/machines/m1/drain", None, 200),
        ),
        (
            "uncordon_machine",
            case(Operator, "/v1/machines/m1/uncordon", None, 200),
        ),
        ("list_jobs", case(AnyToken, "/v1/jobs", None, 200)),
        // Another owner's token submitting for alice: 403.
        (
            "submit_job",
            case(SameOwner, "/v1/jobs", Some(job.clone()), 201),
        ),
        // A dry run of a submit: the same owner rule, nothing written.
        ("plan_job", case(SameOwner, "/v1/plan", Some(job), 200)),
        ("get_job", case(OwnJob, "/v1/jobs/svc-a", None, 200)),
        (
            "scale_job",
            case(
                OwnJob,
                "/v1/jobs/svc-a/scale",
                Some(json!({"replicas": 2})),
                200,
            ),
        ),
        // Alice's task has not run (no borglet): 404 that says so, not "no job".
        (
            "task_logs",
            case(OwnJob, "/v1/jobs/svc-a/tasks/0/logs", None, 404),
        ),
        ("kill_job", case(OwnJob, "/v1/jobs/svc-a/kill", None, 200)),
        // Rows run in id order: no update yet when the rollout is read, paused,
        // resumed or undone (409: nothing in progress, nothing to undo).
        (
            "get_rollout",
            case(OwnJob, "/v1/jobs/svc-a/rollout", None, 200),
        ),
        (
            "pause_rollout",
            case(OwnJob, "/v1/jobs/svc-a/rollout/pause", None, 409),
        ),
        (
            "resume_rollout",
            case(OwnJob, "/v1/jobs/svc-a/rollout/resume", None, 409),
        ),
        (
            "undo_rollout",
            case(OwnJob, "/v1/jobs/svc-a/rollout/undo", None, 409),
        ),
        // After scale_job (replicas 2): a new command is a new version.
        (
            "update_job",
            case(
                OwnJob,
                "/v1/jobs/svc-a",
                Some(json!({"name": "svc-a", "kind": "service", "replicas": 2,
                            "task": {"command": ["/bin/sleep", "61"]}})),
                200,
            ),
        ),
        ("resolve", case(OwnJob, "/v1/resolve/svc-a", None, 200)),
        (
            "events",
            case(OwnJob, "/v1/events?job=svc-a&follow=false", None, 200),
        ),
        ("get_quota", case(SameOwner, "/v1/quotas/alice", None, 200)),
        (
            "put_quota",
            case(
                Admin,
                "/v1/quotas/alice",
                Some(json!({"batch": {"cpu": "4"}})),
                200,
            ),
        ),
        (
            "create_token",
            case(
                Admin,
                "/v1/tokens",
                Some(json!({"name": "made", "owner": "carol", "role": "user"})),
                201,
            ),
        ),
        ("list_tokens", case(Admin, "/v1/tokens", None, 200)),
        (
            "revoke_token",
            case(Admin, "/v1/tokens/throwaway", None, 200),
        ),
        ("audit_log", case(Admin, "/v1/audit", None, 200)),
    ])
}

fn m1() -> Value {
    json!({"name": "m1", "address": "http://127.0.0.1:1",
           "capacity": {"cpu": 2000, "memory": 1073741824u64, "disk": 0}})
}

struct Tokens {
    alice: String,
    bob: String,
    operator: String,
    revoked: String,
}

async fn make_token(app: &TestApp, name: &str, owner: &str, role: &str) -> String {
    let (status, body) = app
        .post_json(
            "/v1/tokens",
            json!({"name": name, "owner": owner, "role": role}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["owner"], owner);
    body["secret"].as_str().unwrap().to_string()
}

async fn call(
    app: &TestApp,
    token: Option<&str>,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let http = match token {
        Some(t) => client_with(t),
        None => reqwest::Client::new(),
    };
    let mut req = http.request(method.clone(), format!("{}{path}", app.url));
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.timeout(Duration::from_secs(20)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn every_route_answers_each_caller_as_its_role_and_owner_allow() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    // m1 stays up though nothing answers at its address.
    let leader = borgmaster::leader::LeaderConfig {
        down_after: Duration::from_secs(3600),
        ..Default::default()
    };
    let app = spawn_app_leading(&url, Duration::from_millis(200), leader).await;
    let tokens = Tokens {
        alice: make_token(&app, "alice", "alice", "user").await,
        bob: make_token(&app, "bob", "bob", "user").await,
        operator: make_token(&app, "ops", "ops", "operator").await,
        revoked: make_token(&app, "gone", "alice", "admin").await,
    };
    make_token(&app, "throwaway", "carol", "user").await;
    let (status, body) = call(
        &app,
        Some(ADMIN_TOKEN),
        &Method::DELETE,
        "/v1/tokens/gone",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.post_json("/v1/machines", m1()).await.0, 201);
    let svc =
        json!({"name": "svc-a", "kind": "service", "task": {"command": ["/bin/sleep", "60"]}});
    let (status, body) = call(
        &app,
        Some(&tokens.alice),
        &Method::POST,
        "/v1/jobs",
        Some(&svc),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["owner"], "alice", "the owner comes from the token");

    let doc: Value = reqwest::get(format!("{}/openapi.json", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cases = cases();
    let mut routes: Vec<(Method, String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let id = op["operationId"].as_str().unwrap_or(path).to_string();
            assert!(
                cases.contains_key(id.as_str()),
                "{method} {path} ({id}) has no row in the authorization matrix"
            );
            routes.push((m, path.clone(), id));
        }
    }
    assert_eq!(
        routes.len(),
        cases.len(),
        "a row of the matrix names no route"
    );
    // The right callers last, and kill after everything else done to the job.
    routes.sort_by_key(|(_, _, id)| (id == "kill_job", id.clone()));

    // Wrong callers first: none of them changes anything.
    for (method, template, id) in &routes {
        let c = &cases[id.as_str()];
        let wrong: [(&str, Option<&str>); 3] = [
            ("no token", None),
            ("a bad token", Some("borg_not-a-token-at-all")),
            ("a revoked token", Some(&tokens.revoked)),
        ];
        for (who, token) in wrong {
            let (status, body) = call(&app, token, method, &c.path, c.body.as_ref()).await;
            if c.needs == Needs::Public {
                // Whatever the route answers, an API token is not what decides it.
                assert_ne!(
                    code(&body),
                    "forbidden",
                    "{method} {template} with {who}: {body}"
                );
                if token.is_none() {
                    assert_eq!(status, c.ok, "{method} {template} with {who}: {body}");
                }
            } else {
                assert_eq!(status, 401, "{method} {template} with {who}: {body}");
                assert_eq!(code(&body), "unauthorized", "{body}");
            }
        }
        // Bob: a user of another owner.
        let body = match (id.as_str(), &c.body) {
            // Bob submitting a job for alice.
            ("submit_job" | "plan_job", Some(b)) => {
                let mut b = b.clone();
                b["owner"] = json!("alice");
                Some(b)
            }
            (_, b) => b.clone(),
        };
        let (status, text) = call(&app, Some(&tokens.bob), method, &c.path, body.as_ref()).await;
        let want = match c.needs {
            Needs::Public => status,
            Needs::AnyToken => 200,
            Needs::OwnJob => 404,
            Needs::SameOwner | Needs::Operator | Needs::Admin => 403,
        };
        assert_eq!(
            status, want,
            "{method} {template} as another owner's user: {text}"
        );
        if c.needs == Needs::OwnJob {
            // Exactly what a job that never existed answers: nothing leaks.
            let absent = c.path.replace("svc-a", "never-was");
            let (s, never) = call(&app, Some(&tokens.bob), method, &absent, body.as_ref()).await;
            assert_eq!(
                (s, never.replace("never-was", "svc-a")),
                (status, text.clone())
            );
        }
        if id == "list_jobs" {
            assert!(
                !text.contains("svc-a"),
                "bob's list shows alice's job: {text}"
            );
        }
        if c.needs == Needs::Operator || c.needs == Needs::Admin {
            // Alice (a user) is refused too.
            let (s, t) = call(&app, Some(&tokens.alice), method, &c.path, c.body.as_ref()).await;
            assert_eq!(s, 403, "{method} {template} as a user: {t}");
        }
        if c.needs == Needs::Admin {
            let (s, t) = call(
                &app,
                Some(&tokens.operator),
                method,
                &c.path,
                c.body.as_ref(),
            )
            .await;
            assert_eq!(s, 403, "{method} {template} as an operator: {t}");
        }
    }

    // The right callers.
    for (method, template, id) in &routes {
        let c = &cases[id.as_str()];
        let token = match c.needs {
            Needs::Public => None,
            Needs::OwnJob | Needs::AnyToken | Needs::SameOwner => Some(tokens.alice.as_str()),
            Needs::Operator => Some(tokens.operator.as_str()),
            Needs::Admin => Some(ADMIN_TOKEN),
        };
        let (mut status, mut body) = call(&app, token, method, &c.path, c.body.as_ref()).await;
        // The event feed reads the log behind the writes: wait for it to
        // catch up with alice's job rather than race it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while id == "events" && !body.contains("svc-a") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (status, body) = call(&app, token, method, &c.path, c.body.as_ref()).await;
        }
        assert_eq!(
            status, c.ok,
            "{method} {template} with the right token: {body}"
        );
        match id.as_str() {
            "task_logs" => assert!(body.contains("has not run yet"), "{body}"),
            "list_jobs" => assert!(body.contains("svc-a"), "{body}"),
            "events" => assert!(body.contains("svc-a"), "{body}"),
            "submit_job" => assert!(body.contains("\"owner\":\"alice\""), "{body}"),
            "list_tokens" => assert!(!body.contains("secret") && !body.contains("hash"), "{body}"),
            _ => {}
        }
    }
    // An operator reads alice's job but may not change it.
    let (s, _) = call(
        &app,
        Some(&tokens.operator),
        &Method::GET,
        "/v1/jobs/svc-a",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, Some(&tokens.operator), &Method::GET, "/v1/jobs", None).await;
    assert_eq!(s, 200);
    let (s, body) = call(
        &app,
        Some(&tokens.operator),
        &Method::POST,
        "/v1/jobs/sub-a/kill",
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
}

#[tokio::test]
async fn the_event_stream_takes_the_token_in_the_query_and_filters_by_owner() {
    let app = helpers::spawn_app().await;
    let alice = make_token(&app, "alice", "alice", "user").await;
    let bob = make_token(&app, "bob", "bob", "user").await;
    for (token, name) in [(&alice, "a-job"), (&bob, "b-job")] {
        let spec = json!({"name": name, "task": {"command": ["/bin/true"]}});
        let (s, body) = call(&app, Some(token), &Method::POST, "/v1/jobs", Some(&spec)).await;
        assert_eq!(s, 201, "{body}");
    }
    let stream = |token: &str| {
        let url = format!("{}/v1/events?follow=false&access_token={token}", app.url);
        async move {
            let resp = reqwest::get(url).await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (s, text) = stream(&alice).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("a-job") && !text.contains("b-job"), "{text}");
    let (s, _) = stream("borg_wrong").await;
    assert_eq!(s, 401);
    // Only the event stream takes a query token.
    let (s, _) = call(
        &app,
        None,
        &Method::GET,
        &format!("/v1/jobs?access_token={alice}"),
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, text) = call(
        &app,
        Some(ADMIN_TOKEN),
        &Method::GET,
        "/v1/events?follow=false",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(text.contains("a-job") && text.contains("b-job"), "{text}");
}

#[tokio::test]
async fn mutating_calls_are_audited_without_secrets_and_revocation_is_immediate() {
    let app = helpers::spawn_app().await;
    let alice = make_token(&app, "alice", "alice", "user").await;
    let spec = json!({"name": "mine", "task": {"command": ["/bin/true"]}});
    let (s, _) = call(&app, Some(&alice), &Method::POST, "/v1/jobs", Some(&spec)).await;
    assert_eq!(s, 201);
    let quota = json!({"batch": {"cpu": "1"}});
    let (s, _) = call(
        &app,
        Some(&alice),
        &Method::PUT,
        "/v1/quotas/alice",
        Some(&quota),
    )
    .await;
    assert_eq!(s, 403);
    // Refused for a bad body: neither a success nor a 403, so not audited.
    let (s, _) = call(
        &app,
        Some(&alice),
        &Method::POST,
        "/v1/jobs",
        Some(&json!({"name": 1})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = call(
        &app,
        Some(ADMIN_TOKEN),
        &Method::DELETE,
        "/v1/tokens/alice",
        None,
    )
    .await;
    assert_eq!(s, 200);
    // The very next call with it fails.
    let (s, body) = call(&app, Some(&alice), &Method::GET, "/v1/jobs", None).await;
    assert_eq!((s, code(&body)), (401, "unauthorized".to_string()));

    let (s, text) = call(
        &app,
        Some(ADMIN_TOKEN),
        &Method::GET,
        "/v1/audit?limit=2",
        None,
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    let first = &page["entries"].as_array().unwrap()[..];
    assert_eq!(first.len(), 2);
    let after = page["next"].as_i64().expect("a next page");
    let (_, rest) = call(
        &app,
        Some(ADMIN_TOKEN),
        &Method::GET,
        &format!("/v1/audit?after={after}"),
        None,
    )
    .await;
    let rest: Value = serde_json::from_str(&rest).unwrap();
    let entries: Vec<Value> = first
        .iter()
        .chain(rest["entries"].as_array().unwrap())
        .cloned()
        .collect();
    let brief: Vec<(String, String, String, i64, String)> = entries
        .iter()
        .map(|e| {
            (
                e["token"].as_str().unwrap().to_string(),
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_i64().unwrap(),
                e["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want = |t: &str, m: &str, p: &str, s: i64, target: &str| {
        (
            t.to_string(),
            m.to_string(),
            p.to_string(),
            s,
            target.to_string(),
        )
    };
    assert_eq!(
        brief,
        vec![
            want("bootstrap", "POST", "/v1/tokens", 201, ""),
            want("alice", "POST", "/v1/jobs", 201, "job=mine"),
            want("alice", "PUT", "/v1/quotas/alice", 403, "owner=alice"),
            want(
                "bootstrap",
                "DELETE",
                "/v1/tokens/alice",
                200,
                "token=alice"
            ),
        ]
    );
    assert!(entries.iter().all(|e| e["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:"))));
    assert_eq!(entries[1]["owner"], "alice");
    let all = serde_json::to_string(&entries).unwrap();
    assert!(
        !all.contains(&alice) && !all.contains(ADMIN_TOKEN),
        "a secret in the audit log"
    );
    // Users and operators do not read it.
    let ops = make_token(&app, "ops", "ops", "operator").await;
    let (s, _) = call(&app, Some(&ops), &Method::GET, "/v1/audit", None).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_master_without_an_admin_token_refuses_to_start_and_insecure_runs_open() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    let start = |auth: borgmaster::auth::AuthConfig| {
        let url = url.clone();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let config = borgmaster::Config {
                auth,
                ..helpers::test_config(
                    listener.local_addr().unwrap(),
                    &url,
                    Duration::from_millis(200),
                )
            };
            let shutdown = tokio_util::sync::CancellationToken::new();
            let addr = listener.local_addr().unwrap();
            let run = tokio::spawn(borgmaster::run(listener, config, shutdown.clone()));
            (addr, run, shutdown)
        }
    };
    let (_, run, _stop) = start(Default::default()).await;
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the master refuses at once")
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no live admin token in the database"),
        "{err}"
    );
    // Open: no token needed, and the caller is an admin.
    let insecure = borgmaster::auth::AuthConfig {
        insecure: true,
        ..Default::default()
    };
    let (addr, _run, stop) = start(insecure).await;
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(r) = http.get(format!("http://{addr}/v1/tokens")).send().await {
            break r.status().as_u16();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the insecure master did not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    stop.cancel();
}

//! `POST /v1/machines/{name}/nudge`: a borglet asks to be synced now. Against a real
//! master polling so rarely (every hour) that only a nudge can cause a second sync,
//! and a fake borglet that records the syncs it gets.

mod helpers;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use borg_shared::wire::{SyncRequest, SyncResponse};
use helpers::{spawn_app_polling_every, TestApp};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(10);

/// Every sync received, with its `Authorization` header.
type Syncs = Arc<Mutex<Vec<(SyncRequest, Option<String>)>>>;

/// A borglet that runs nothing and records every sync; its URL.
async fn fake_borglet(syncs: Syncs) -> String {
    async fn sync(
        State(syncs): State<Syncs>,
        headers: axum::http::HeaderMap,
        Json(req): Json<SyncRequest>,
    ) -> Json<SyncResponse> {
        let machine = req.machine.clone();
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        syncs.lock().unwrap().push((req, auth));
        Json(SyncResponse {
            machine,
            attempts: vec![],
        })
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/sync", post(sync))
        .with_state(syncs);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Wait, with a deadline, until the fake borglet has received `n` syncs.
async fn wait_for_syncs(syncs: &Syncs, n: usize) -> Vec<(SyncRequest, Option<String>)> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let seen = syncs.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for sync #{n} ({} so far)",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn nudge(app: &TestApp, machine: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = app
        .http
        .post(format!("{}/v1/machines/{machine}/nudge", app.url));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_nudge_with_the_machine_credential_syncs_it_before_the_poll_interval() {
    let app = spawn_app_polling_every(Duration::from_secs(3600)).await;
    let syncs: Syncs = Default::default();
    let address = fake_borglet(syncs.clone()).await;
    let (status, body) = app
        .post_json(
            "/v1/machines",
            json!({"name": "m1", "address": address,
                   "capacity": {"cpu": 2000, "memory": 1073741824u64, "disk": 0}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["credential"]
        .as_str()
        .expect("a registration with the join token is issued a credential")
        .to_string();

    // A new machine loop syncs at once, with the machine's sync key.
    let first = wait_for_syncs(&syncs, 1).await;
    assert_eq!(first[0].0.machine, "m1");
    let key = format!("Bearer {}", borg_shared::agent::sync_key(&token));
    assert_eq!(first[0].1.as_deref(), Some(key.as_str()));

    let (status, body) = nudge(&app, "m1", Some("not-the-token")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = nudge(&app, "m1", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = nudge(&app, "no-such-machine", Some(&token)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(syncs.lock().unwrap().len(), 1, "a refused nudge synced");

    let (status, body) = nudge(&app, "m1", Some(&token)).await;
    assert_eq!(status, 202, "{body}");
    let second = wait_for_syncs(&syncs, 2).await;
    assert_eq!(second[1].1.as_deref(), Some(key.as_str()));

    let metrics = app.metrics_text().await;
    for result in ["accepted", "unauthorized", "unknown_machine"] {
        assert!(
            metrics.contains(&format!("borg_nudges_total{{result=\"{result}\"}}")),
            "{metrics}"
        );
    }
}

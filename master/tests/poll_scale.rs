//! The poll loop at scale, against a real master and Postgres with fake
//! borglets: a borglet that never answers holds up only its own syncs, and a
//! sync that changes nothing is served from the leader's memory.

mod helpers;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use borg_shared::wire::{SyncRequest, SyncResponse};
use helpers::{spawn_app_polling_every, TestApp};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(30);

/// A fake borglet's URL; `frozen`: it takes every sync and never answers
/// (as a SIGSTOPped borglet whose socket still accepts). Counts syncs received.
async fn fake_borglet(count: Arc<AtomicUsize>, frozen: bool) -> String {
    async fn answer(
        State(count): State<Arc<AtomicUsize>>,
        Json(req): Json<SyncRequest>,
    ) -> Json<SyncResponse> {
        count.fetch_add(1, Ordering::SeqCst);
        Json(SyncResponse {
            machine: req.machine,
            attempts: vec![],
        })
    }
    async fn hang(State(count): State<Arc<AtomicUsize>>) -> Json<SyncResponse> {
        count.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = if frozen {
        Router::new().route("/v1/sync", post(hang))
    } else {
        Router::new().route("/v1/sync", post(answer))
    }
    .with_state(count);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn register(app: &TestApp, name: &str, address: &str) {
    let (status, body) = app
        .post_json(
            "/v1/machines",
            json!({"name": name, "address": address,
                   "capacity": {"cpu": 2000, "memory": 1073741824u64, "disk": 0}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_borglet_does_not_delay_the_other_borglets_syncs() {
    // Polls every 200 ms; a sync the borglet does not answer is given up after 5 s.
    let app = spawn_app_polling_every(Duration::from_millis(200)).await;
    let frozen_syncs = Arc::new(AtomicUsize::new(0));
    let frozen = fake_borglet(frozen_syncs.clone(), true).await;
    register(&app, "frozen", &frozen).await;
    // The master is now waiting on the frozen borglet's first sync.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while frozen_syncs.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the frozen borglet was never synced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut others = Vec::new();
    for i in 0..5 {
        let count = Arc::new(AtomicUsize::new(0));
        let url = fake_borglet(count.clone(), false).await;
        register(&app, &format!("m{i}"), &url).await;
        others.push(count);
    }
    // Were syncs held up behind the frozen one, each other borglet would get
    // one sync per 5 s timeout, and the frozen borglet a new sync each time.
    const SYNCS: usize = 5;
    loop {
        let counts: Vec<usize> = others.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        let frozen_n = frozen_syncs.load(Ordering::SeqCst);
        if counts.iter().all(|&n| n >= SYNCS) {
            assert!(
                frozen_n <= 2,
                "the others got {SYNCS} syncs only after the master gave up on the frozen borglet {} times",
                frozen_n - 1
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "others' syncs so far {counts:?}, frozen borglet asked {frozen_n} times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_syncs_are_served_from_the_leaders_memory() {
    let app = spawn_app_polling_every(Duration::from_millis(100)).await;
    let count = Arc::new(AtomicUsize::new(0));
    let url = fake_borglet(count.clone(), false).await;
    register(&app, "m1", &url).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // The first sync reads the set from the store and applies the report; the
    // following ones, with nothing changed, do neither.
    loop {
        let cached = app
            .metric("borg_sync_desired_total{source=\"cache\"}")
            .await;
        let skipped = app.metric("borg_sync_reports_total{applied=\"no\"}").await;
        if cached >= 5.0 && skipped >= 5.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} syncs: {cached} desired sets from memory, {skipped} reports not applied",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from_store = app
        .metric("borg_sync_desired_total{source=\"store\"}")
        .await;
    assert!(
        from_store >= 1.0,
        "the first desired set comes from the store"
    );
}

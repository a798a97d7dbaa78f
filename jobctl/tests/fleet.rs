//! Fleet mode (a measurement, ignored by default): one process serves many
//! simulated borglets (`/b/{i}/v1/sync`, each reporting what it is asked to run
//! as running), a real master and scheduler (separate processes, real
//! Postgres) poll and place on them, and the master's CPU is taken over a
//! window of steady polling.
//!
//! `BORG_FLEET=1000 cargo test -p jobctl --test fleet -- --ignored --nocapture`
//! (`BORG_FLEET_TASKS`, default 2 per borglet; `BORG_FLEET_WINDOW_S`, default 20).

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use borg_shared::wire::SyncRequest;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin token the test's master is bootstrapped with, sent on every call.
const ADMIN_TOKEN: &str = "borg_test-admin-0123456789abcdef";

const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

#[derive(Default)]
struct Fleet {
    syncs: AtomicU64,
    /// Borglets synced at least once.
    seen: Mutex<HashSet<usize>>,
}

async fn sync(
    State(fleet): State<Arc<Fleet>>,
    Path(i): Path<usize>,
    Json(req): Json<SyncRequest>,
) -> Json<Value> {
    fleet.syncs.fetch_add(1, Ordering::Relaxed);
    fleet.seen.lock().unwrap().insert(i);
    let now = chrono::Utc::now();
    let attempts: Vec<Value> = req
        .attempts
        .iter()
        .map(|a| json!({"id": a.id, "phase": "running", "pid": 100_000 + i, "started_at": now}))
        .collect();
    Json(json!({"machine": req.machine, "attempts": attempts}))
}

struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = procfs::process::Process::new(pid as i32)
        .unwrap()
        .stat()
        .unwrap();
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The simulated fleet's join token (its borglets skip checking the master's key).
const JOIN_TOKEN: &str = "fleet-join-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: minutes"]
async fn one_master_polls_a_fleet_of_simulated_borglets() {
    let n = env_num("BORG_FLEET", 1000) as usize;
    let tasks = env_num("BORG_FLEET_TASKS", 2 * n as u64);
    let window = Duration::from_secs(env_num("BORG_FLEET_WINDOW_S", 20));
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();

    let fleet = Arc::new(Fleet::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fleet_addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/b/{i}/v1/sync", post(sync))
        .with_state(fleet.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let master = format!("http://127.0.0.1:{port}");
    let spawn = |component: &str, args: Vec<String>| {
        Command::new(JOBCTL)
            .arg("component")
            .arg(component)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("BORG_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("DATABASE_URL", &database_url)
            .env("BORG_JOIN_TOKEN", JOIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let master_proc = spawn(
        "borgmaster",
        vec!["--listen".into(), format!("127.0.0.1:{port}")],
    );
    let master_pid = master_proc.id();
    let scheduler = spawn("borgscheduler", vec![]);
    let _kids = Kids(vec![master_proc, scheduler]);
    let http = {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    wait_for("the master", Duration::from_secs(60), || async {
        let r = http.get(format!("{master}/healthz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    for i in 0..n {
        let body = json!({"name": format!("f{i}"), "address": format!("http://{fleet_addr}/b/{i}"),
            "capacity": {"cpu": 2000, "memory": 4u64 << 30, "disk": 10u64 << 30}});
        let r = http
            .post(format!("{master}/v1/machines"))
            .header(borg_shared::agent::JOIN_TOKEN_HEADER, JOIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "registering f{i}: {}", r.status());
    }
    let spec = json!({"name": "fleet", "kind": "service", "replicas": tasks, "task": {
        "command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}});
    let r = http
        .post(format!("{master}/v1/jobs"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    wait_for(
        "every borglet synced and every task running",
        Duration::from_secs(600),
        || async {
            let v: Value = http
                .get(format!("{master}/v1/jobs/fleet"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let running = v["task_counts"]["running"].as_u64()?;
            (fleet.seen.lock().unwrap().len() == n && running == tasks).then_some(())
        },
    )
    .await;

    let (cpu0, syncs0, t0) = (
        cpu_seconds(master_pid),
        fleet.syncs.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let wall = t0.elapsed().as_secs_f64();
    let cores = (cpu_seconds(master_pid) - cpu0) / wall;
    let rate = (fleet.syncs.load(Ordering::Relaxed) - syncs0) as f64 / wall;
    eprintln!(
        "{n} simulated borglets, {tasks} running tasks: {rate:.0} syncs/s, master {cores:.2} cores over {wall:.0} s"
    );
}

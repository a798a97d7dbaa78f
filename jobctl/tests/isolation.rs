//! Isolation end to end: a real master, a real borglet (in-process, on this
//! host's cgroups) and real task processes. A task the kernel OOM-kills ends
//! `failed` with reason `oom-killed`, and its death certificate lands in
//! Postgres and in the API; usage and the isolation mode reach the API too.
//! Skips, saying so, where the host has no writable cgroup hierarchy.
//!
//! Here rather than in the master's tests: the borglet starts each task through
//! its keeper, an executable of this build that knows `__borglet-keeper`
//! (`jobctl`, which hosts borglets in `jobctl dev`); a test binary cannot be one.

use borg_shared::wire::{DeathCause, IsolationMode, JobView, MachineList};
use borgmaster::store::Store;
use clap::Parser;
/// The join token of the test cell's master and borglets.
const JOIN_TOKEN: &str = "test-join-token";
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The admin token the test's master is bootstrapped with, sent on every call.
const ADMIN_TOKEN: &str = "borg_test-admin-0123456789abcdef";

const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `check` until it yields `Some`, failing after `DEADLINE`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real master on a random port against a fresh database.
struct TestApp {
    url: String,
    store: Store,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("test database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = borgmaster::Config {
        listen: listener.local_addr().unwrap(),
        database_url: database_url.clone(),
        database_url_file: None,
        agents: borgmaster::agents::AgentConfig {
            join_token_file: None,
            join_token: Some(JOIN_TOKEN.into()),
        },
        poll_interval: Duration::from_millis(200),
        leader: Default::default(),
        auth: borgmaster::auth::AuthConfig {
            bootstrap_token: Some(ADMIN_TOKEN.into()),
            ..Default::default()
        },
        limits: Default::default(),
        tls: Default::default(),
        log: Default::default(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(borgmaster::run(listener, config, shutdown.clone()));
    let store = Store::connect(&database_url).await.unwrap();
    let http = {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    eventually("the master is up", || async {
        http.get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    })
    .await;
    TestApp {
        url,
        store,
        http,
        shutdown,
    }
}

struct Borglet {
    name: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Borglet {
    async fn start(app: &TestApp) -> Borglet {
        let data = tempfile::tempdir().unwrap();
        let name = format!("m-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        let token = data.path().join("join.token");
        std::fs::write(&token, JOIN_TOKEN).unwrap();
        let config = borglet::Config::try_parse_from([
            "borglet",
            "--join-token-file",
            token.to_str().unwrap(),
            "--name",
            &name,
            "--master",
            &app.url,
            "--data-dir",
            data.path().to_str().unwrap(),
            "--on-exit",
            "stop",
            "--usage-interval",
            "100ms",
            "--shim-exe",
            env!("CARGO_BIN_EXE_jobctl"),
        ])
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(borglet::run(listener, config, shutdown.clone()));
        Borglet {
            name,
            shutdown,
            handle,
            _data: data,
        }
    }

    /// Stop every task and remove the borglet's cgroups.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("borglet stopped in time")
            .unwrap()
            .unwrap();
    }
}

async fn machines(app: &TestApp) -> MachineList {
    let r = app
        .http
        .get(format!("{}/v1/machines", app.url))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn job(app: &TestApp, name: &str) -> JobView {
    let r = app
        .http
        .get(format!("{}/v1/jobs/{name}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A registered borglet on isolation, or `None` after saying why not.
async fn isolated(app: &TestApp) -> Option<Borglet> {
    let b = Borglet::start(app).await;
    let mode = eventually("the borglet registered", || async {
        machines(app)
            .await
            .machines
            .into_iter()
            .find(|m| m.name == b.name)
            .map(|m| m.isolation)
    })
    .await;
    match mode.expect("the machine reports its isolation") {
        IsolationMode::None => {
            eprintln!("SKIP: no writable cgroup hierarchy on this host (not root?)");
            b.stop().await;
            None
        }
        _ => Some(b),
    }
}

/// Submit `spec` and place its pending tasks on machine `name`, as a scheduler would.
async fn submit_and_place(app: &TestApp, spec: serde_json::Value, machine: &str) {
    let r = app
        .http
        .post(format!("{}/v1/jobs", app.url))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let m: (borg_shared::MachineId,) = sqlx::query_as("SELECT id FROM machines WHERE name = $1")
        .bind(machine)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let batch = borgmaster::store::fixtures::pending_placements(&app.store, m.0, None)
        .await
        .unwrap();
    let n = batch.len();
    let placed = app.store.commit_placements("test", &batch).await.unwrap();
    assert_eq!(placed.placed.len(), n);
}

#[tokio::test]
async fn an_oom_killed_task_fails_with_its_death_certificate_in_postgres() {
    let app = spawn_app().await;
    let Some(b) = isolated(&app).await else {
        return;
    };
    let spec = serde_json::json!({
        "name": "eat",
        "task": {
            "command": ["/bin/sh", "-c", "echo about to eat >&2; head -c 200M /dev/zero | tail"],
            "resources": {"memory": "32Mi"},
            "restart": {"max_attempts": 2, "backoff": "10ms"}
        }
    });
    submit_and_place(&app, spec, &b.name).await;
    let view = eventually("the job failed", || async {
        let j = job(&app, "eat").await;
        (j.state == borg_shared::JobState::Failed).then_some(j)
    })
    .await;
    let task = &view.tasks.as_ref().unwrap()[0];
    assert_eq!(task.reason.as_deref(), Some("oom-killed"), "{task:?}");
    let death = task.death.as_ref().expect("a death certificate");
    assert_eq!(death.cause, DeathCause::OomKilled);
    let peak = death.peak_memory.expect("peak memory").0;
    assert!(
        (30 << 20..=34 << 20).contains(&peak),
        "peak {peak} is about the 32 MiB limit"
    );
    assert!(death
        .stderr_tail
        .as_deref()
        .unwrap()
        .starts_with("about to eat\n"));

    let row: (String, String, i64, String) =
        sqlx::query_as("SELECT state::text, cause, peak_memory, reason FROM attempts")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(row.0, "failed");
    assert_eq!(row.1, "oom-killed");
    assert_eq!(row.2 as u64, peak);
    assert_eq!(row.3, "oom-killed");
    // Its first run was killed the same way and restarted in place: the event says why.
    let (restart,): (String,) =
        sqlx::query_as("SELECT reason FROM events WHERE reason LIKE 'restarted in place%'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(
        restart.starts_with("restarted in place (restart 1) after: oom-killed, peak memory "),
        "{restart}"
    );
    b.stop().await;
}

#[tokio::test]
async fn usage_reaches_the_task_and_the_machine_and_a_stop_names_who_asked() {
    let app = spawn_app().await;
    let Some(b) = isolated(&app).await else {
        return;
    };
    let spec = serde_json::json!({
        "name": "busy",
        "kind": "service",
        "task": {"command": ["/bin/sh", "-c", "while :; do :; done"], "kill_grace": "200ms"}
    });
    submit_and_place(&app, spec, &b.name).await;
    let usage = eventually("the task's usage is shown", || async {
        let j = job(&app, "busy").await;
        j.tasks?.first()?.usage.filter(|u| u.cpu.0 > 100)
    })
    .await;
    assert!(usage.memory.0 > 0);
    let machine = machines(&app)
        .await
        .machines
        .into_iter()
        .find(|m| m.name == b.name)
        .unwrap();
    assert!(machine.usage.is_some_and(|u| u.cpu.0 > 0), "{machine:?}");
    assert_eq!(machine.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));

    let r = app
        .http
        .post(format!("{}/v1/jobs/busy/kill", app.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let death = eventually("the killed task's death certificate", || async {
        job(&app, "busy").await.tasks?.first()?.death.clone()
    })
    .await;
    assert_eq!(death.cause, DeathCause::Killed);
    assert!(
        death.killed_by.as_deref().unwrap().starts_with("killed by"),
        "{death:?}"
    );
    b.stop().await;
}

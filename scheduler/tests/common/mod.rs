//! Helpers for the database tests: a real scheduler against a fresh database,
//! readable builders for rows, and a view of the scheduler's own tracing
//! events so a test can wait for "two quiet passes" instead of sleeping.
#![allow(dead_code)]

use borg_shared::{JobId, MachineId, TaskId};
use borgscheduler::Config;
use serde_json::json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub const MI: i64 = 1 << 20;
pub const GI: i64 = 1 << 30;

// ---------- database ----------

pub async fn fresh_pool() -> (String, PgPool) {
    capture_logs();
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connecting to the test database");
    (url, pool)
}

pub struct MachineBuilder {
    name: String,
    cpu: i64,
    memory: i64,
    disk: i64,
    labels: serde_json::Value,
    state: &'static str,
}

impl MachineBuilder {
    pub fn new(name: &str) -> Self {
        MachineBuilder {
            name: name.to_string(),
            cpu: 1000,
            memory: GI,
            disk: 10 * GI,
            labels: json!({}),
            state: "up",
        }
    }
    pub fn cpu(mut self, milli: i64) -> Self {
        self.cpu = milli;
        self
    }
    pub fn mem(mut self, bytes: i64) -> Self {
        self.memory = bytes;
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels[k] = json!(v);
        self
    }
    pub fn state(mut self, s: &'static str) -> Self {
        self.state = s;
        self
    }
    pub async fn insert(self, pool: &PgPool) -> MachineId {
        let id = MachineId::new();
        sqlx::query(
            "INSERT INTO machines (id, name, address, state, labels, cpu_milli, memory, disk)
             VALUES ($1, $2, $3, $4::machine_state, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&self.name)
        .bind(format!("127.0.0.1:{}", 7701))
        .bind(self.state)
        .bind(&self.labels)
        .bind(self.cpu)
        .bind(self.memory)
        .bind(self.disk)
        .execute(pool)
        .await
        .expect("inserting a machine");
        id
    }
}

/// A job and its `replicas` pending tasks. Task `i` asks for
/// `cpu + (i % 3) * cpu_step` millicores, so one job has mixed sizes.
pub struct JobBuilder {
    name: String,
    state: &'static str,
    priority: i32,
    replicas: i32,
    cpu: i64,
    cpu_step: i64,
    memory: i64,
    disk: i64,
    constraints: Vec<serde_json::Value>,
    spread: Option<serde_json::Value>,
    not_before_secs: Option<i64>,
    kind: &'static str,
}

impl JobBuilder {
    pub fn new(name: &str) -> Self {
        JobBuilder {
            name: name.to_string(),
            state: "pending",
            priority: 100,
            replicas: 1,
            cpu: 100,
            cpu_step: 0,
            memory: 64 * MI,
            disk: 0,
            constraints: vec![],
            spread: None,
            not_before_secs: None,
            kind: "batch",
        }
    }
    pub fn service(mut self) -> Self {
        self.kind = "service";
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }
    pub fn replicas(mut self, n: i32) -> Self {
        self.replicas = n;
        self
    }
    pub fn cpu(mut self, milli: i64) -> Self {
        self.cpu = milli;
        self
    }
    pub fn cpu_step(mut self, milli: i64) -> Self {
        self.cpu_step = milli;
        self
    }
    pub fn mem(mut self, bytes: i64) -> Self {
        self.memory = bytes;
        self
    }
    pub fn disk(mut self, bytes: i64) -> Self {
        self.disk = bytes;
        self
    }
    pub fn state(mut self, s: &'static str) -> Self {
        self.state = s;
        self
    }
    /// Tasks back off until this many seconds from now.
    pub fn not_before(mut self, secs: i64) -> Self {
        self.not_before_secs = Some(secs);
        self
    }
    pub fn constraint(mut self, label: &str, op: &str, value: Option<&str>) -> Self {
        let mut c = json!({"label": label, "op": op});
        if let Some(v) = value {
            c["value"] = json!(v);
        }
        self.constraints.push(c);
        self
    }
    /// `spread: {...}` of the spec, as JSON.
    pub fn spread(mut self, spread: serde_json::Value) -> Self {
        self.spread = Some(spread);
        self
    }
    pub async fn insert(self, pool: &PgPool) -> (JobId, Vec<TaskId>) {
        let id = JobId::new();
        let mut spec = json!({
            "name": self.name,
            "priority": self.priority,
            "replicas": self.replicas,
            "task": {"command": ["true"], "resources": {"cpu": format!("{}m", self.cpu), "memory": self.memory}},
            "constraints": self.constraints,
        });
        if let Some(spread) = self.spread {
            spec["spread"] = spread;
        }
        sqlx::query(
            "INSERT INTO jobs (id, name, kind, state, owner, priority, replicas, spec)
             VALUES ($1, $2, $7::job_kind, $3::job_state, 'test', $4, $5, $6)",
        )
        .bind(id)
        .bind(&self.name)
        .bind(self.state)
        .bind(self.priority)
        .bind(self.replicas)
        .bind(&spec)
        .bind(self.kind)
        .execute(pool)
        .await
        .expect("inserting a job");
        let tasks: Vec<TaskId> = sqlx::query_scalar(
            "INSERT INTO tasks (id, job_id, index, priority, cpu_milli, memory, disk, max_runs, not_before)
             SELECT gen_random_uuid(), $1, i, $2, $3 + (i % 3) * $4, $5, $6, 3,
                    CASE WHEN $7::bigint IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END
             FROM generate_series(0, $8 - 1) AS i
             RETURNING id",
        )
        .bind(id)
        .bind(self.priority)
        .bind(self.cpu)
        .bind(self.cpu_step)
        .bind(self.memory)
        .bind(self.disk)
        .bind(self.not_before_secs)
        .bind(self.replicas)
        .fetch_all(pool)
        .await
        .expect("inserting tasks");
        (id, tasks)
    }
}

pub async fn task_state(pool: &PgPool, task: TaskId) -> (String, Option<String>) {
    sqlx::query_as("SELECT state::text, task_reason(t) FROM tasks t WHERE id = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .expect("reading a task")
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

// ---------- a running scheduler ----------

pub struct Running {
    pub name: String,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// A scheduler's config as the tests run it: a pass every interval (no
/// waiting for a change), the queue shared out with the other schedulers.
pub fn config(url: &str, name: &str, interval: Duration, batch_size: u32) -> Config {
    Config {
        database_url: url.to_string(),
        database_url_file: None,
        interval,
        batch_size,
        name: name.to_string(),
        listen: None,
        scoring: Default::default(),
        recheck_after: Duration::ZERO,
        whole_queue: false,
        sample: 128,
        commit_streams: 2,
        // The cache path even for the few machines of a test (see tests/cache.rs).
        cache_machines: 0,
        log: Default::default(),
    }
}

pub fn start(url: &str, name: &str, interval: Duration, batch_size: u32) -> Running {
    start_config(config(url, name, interval, batch_size))
}

pub fn start_config(config: Config) -> Running {
    let shutdown = CancellationToken::new();
    let name = config.name.clone();
    let handle = tokio::spawn(borgscheduler::run(config, shutdown.clone()));
    Running {
        name,
        shutdown,
        handle,
    }
}

impl Running {
    /// Shut down and insist it is graceful and prompt.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 10s", self.name))
            .expect("scheduler task panicked");
        r.unwrap_or_else(|e| panic!("{} failed: {e:#}", self.name));
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Poll `cond` until it holds or `within` passes (then panic with `what`).
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------- the scheduler's tracing events ----------

/// One event the scheduler logged, with its fields as text.
#[derive(Debug, Clone)]
pub struct Logged {
    pub seq: usize,
    pub message: String,
    pub fields: HashMap<String, String>,
}

impl Logged {
    pub fn num(&self, field: &str) -> u64 {
        self.fields
            .get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("event {self:?} has no numeric {field}"))
    }
}

static LOG: OnceLock<Mutex<Vec<Logged>>> = OnceLock::new();

fn log() -> &'static Mutex<Vec<Logged>> {
    LOG.get_or_init(|| Mutex::new(Vec::new()))
}

/// Sequence number the next logged event will get.
pub fn log_seq() -> usize {
    log().lock().unwrap().len()
}

/// Events logged by the scheduler named `scheduler`, oldest first.
pub fn logged(scheduler: &str) -> Vec<Logged> {
    log()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.fields.get("scheduler").map(String::as_str) == Some(scheduler))
        .cloned()
        .collect()
}

/// The end-of-pass events (with their figures) of one scheduler.
pub fn passes(scheduler: &str) -> Vec<Logged> {
    logged(scheduler)
        .into_iter()
        .filter(|l| l.message == "pass")
        .collect()
}

struct Capture;

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("borgscheduler") {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let message = f.0.remove("message").unwrap_or_default();
        let mut log = log().lock().unwrap();
        let seq = log.len();
        log.push(Logged {
            seq,
            message,
            fields: f.0,
        });
    }
}

/// Install the capture once per test binary; `RUST_LOG` also prints to the test output.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let print = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            );
        tracing_subscriber::registry()
            .with(Capture)
            .with(print)
            .try_init()
            .ok();
    });
}

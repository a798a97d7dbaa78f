//! Test harness: a real borglet on 127.0.0.1:0 with its own temp data dir, a tiny
//! master stub that records registrations and nudges, and helpers that poll a condition with
//! a deadline instead of sleeping.
#![allow(dead_code)] // each test binary uses a different subset

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use borg_shared::wire::{AttemptPhase, AttemptReport, AttemptSpec, Capacity, RegisterMachine};
use borg_shared::wire::{SyncRequest, SyncResponse};
use borg_shared::{AttemptId, Bytes, MilliCpu};
use borglet::Config;
use clap::Parser;
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Poll `check` until it yields `Some`, failing the test after `DEADLINE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------- master stub ----------

/// What a registration presented: its `Authorization` and join-token headers.
pub type Proof = (Option<String>, Option<String>);

pub struct MasterStub {
    pub url: String,
    /// The credential it issues on every registration (None: it refuses them, 401).
    pub credential: Option<String>,
    pub registrations: Arc<Mutex<Vec<RegisterMachine>>>,
    /// The `Authorization` and join-token headers of each registration.
    pub proofs: Arc<Mutex<Vec<Proof>>>,
    pub nudges: Arc<NudgeLog>,
    stop: CancellationToken,
}

/// What arrived at the stub's `POST /v1/machines/{name}/nudge`. While held, every
/// nudge waits for its answer until the test releases them.
pub struct NudgeLog {
    state: Mutex<NudgeState>,
    held: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct NudgeState {
    /// In arrival order.
    seen: Vec<SeenNudge>,
    /// When each arrived, in the same order.
    arrivals: Vec<std::time::Instant>,
    in_flight: usize,
    max_in_flight: usize,
}

/// One nudge as the stub saw it: the machine in its path, its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenNudge {
    pub machine: String,
    pub authorization: Option<String>,
}

impl NudgeLog {
    fn new() -> Self {
        NudgeLog {
            state: Default::default(),
            held: tokio::sync::watch::Sender::new(false),
        }
    }

    async fn receive(&self, machine: String, headers: HeaderMap) -> StatusCode {
        {
            let mut st = self.state.lock().unwrap();
            let authorization = headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_string());
            st.seen.push(SeenNudge {
                machine,
                authorization,
            });
            st.arrivals.push(std::time::Instant::now());
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
        }
        let mut held = self.held.subscribe();
        // Err only if the sender is gone, i.e. the stub is being dropped.
        let _ = held.wait_for(|h| !*h).await;
        self.state.lock().unwrap().in_flight -= 1;
        StatusCode::ACCEPTED
    }

    /// Hold (true) or answer (false) nudges, including those waiting now.
    pub fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }

    pub fn seen(&self) -> Vec<SeenNudge> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// When each nudge arrived, in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().arrivals.clone()
    }

    /// The most nudges that were ever waiting for their answer at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

impl MasterStub {
    pub async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    pub fn serve(listener: TcpListener) -> Self {
        Self::serve_issuing(listener, Some(format!("stub-{}", AttemptId::new())))
    }

    /// A stub that refuses every registration (401) and issues nothing.
    pub async fn spawn_refusing() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_issuing(listener, None)
    }

    fn serve_issuing(listener: TcpListener, credential: Option<String>) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let registrations: Arc<Mutex<Vec<RegisterMachine>>> = Default::default();
        let proofs: Arc<Mutex<Vec<Proof>>> = Default::default();
        let seen = Arc::clone(&registrations);
        let seen_proofs = Arc::clone(&proofs);
        let issue = credential.clone();
        let nudges = Arc::new(NudgeLog::new());
        let log = Arc::clone(&nudges);
        let app = Router::new()
            .route(
                "/v1/machines",
                post(move |headers: HeaderMap, Json(body): Json<RegisterMachine>| {
                    let seen = Arc::clone(&seen);
                    let seen_proofs = Arc::clone(&seen_proofs);
                    let issue = issue.clone();
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .map(|v| v.to_str().unwrap().to_string())
                        };
                        seen_proofs.lock().unwrap().push((
                            header(header::AUTHORIZATION.as_str()),
                            header(borg_shared::agent::JOIN_TOKEN_HEADER),
                        ));
                        seen.lock().unwrap().push(body);
                        match issue {
                            Some(c) => (
                                StatusCode::CREATED,
                                Json(serde_json::json!({ "credential": c })),
                            ),
                            None => (
                                StatusCode::UNAUTHORIZED,
                                Json(serde_json::json!({"error": {"code": "unauthorized", "message": "no"}})),
                            ),
                        }
                    }
                }),
            )
            .route(
                "/v1/machines/{name}/nudge",
                post(move |Path(name): Path<String>, headers: HeaderMap| {
                    let log = Arc::clone(&log);
                    async move { log.receive(name, headers).await }
                }),
            );
        let stop = CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
                .unwrap()
        });
        MasterStub {
            url,
            credential,
            registrations,
            proofs,
            nudges,
            stop,
        }
    }

    /// What the real master would send this stub's borglets: `Bearer <sync key>`.
    pub fn authorization(&self) -> String {
        let credential = self.credential.as_deref().unwrap_or("none");
        format!("Bearer {}", borg_shared::agent::sync_key(credential))
    }

    /// An HTTP client that talks to borglets as this stub's master would.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            self.authorization().parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// A master URL nothing listens on (yet).
    pub fn not_listening(url: String) -> Self {
        MasterStub {
            url,
            credential: None,
            registrations: Default::default(),
            proofs: Default::default(),
            nudges: Arc::new(NudgeLog::new()),
            stop: CancellationToken::new(),
        }
    }

    pub fn count(&self) -> usize {
        self.registrations.lock().unwrap().len()
    }

    pub async fn first_registration(&self) -> RegisterMachine {
        eventually("a registration at the master stub", || async {
            self.registrations.lock().unwrap().first().cloned()
        })
        .await
    }
}

impl Drop for MasterStub {
    fn drop(&mut self) {
        // Answer held nudges, or graceful shutdown would wait on them.
        self.nudges.hold(false);
        self.stop.cancel();
    }
}

// ---------- borglet ----------

pub struct TestBorglet {
    pub url: String,
    pub name: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub master: MasterStub,
    pub epoch: i64,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Pids last reported running or stopping: killed (as groups) when the test
    /// ends, so a failing test leaves no `sleep 1000` behind.
    pids: Mutex<HashSet<i32>>,
    /// Set when its tasks are left to the next borglet: neither they nor their
    /// cgroups are removed when this one drops.
    keep_tasks: bool,
}

impl TestBorglet {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Start a borglet with extra flags (`--on-exit stop` unless given).
    pub async fn spawn_with(extra: &[&str]) -> Self {
        let master = MasterStub::spawn().await;
        Self::spawn_against(master, extra).await
    }

    pub async fn spawn_against(master: MasterStub, extra: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        // Tasks of a borglet running as root run as `nobody`: they must be able
        // to reach their sandbox.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = format!("m-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Self::spawn_in(master, data_dir, name, extra).await
    }

    /// A borglet named `name` on `data_dir` (another one's, to restart it).
    pub async fn spawn_in(
        master: MasterStub,
        data_dir: tempfile::TempDir,
        name: String,
        extra: &[&str],
    ) -> Self {
        let mut args: Vec<String> = vec![
            "borglet".into(),
            "--name".into(),
            name.clone(),
            "--master".into(),
            master.url.clone(),
            "--data-dir".into(),
            data_dir.path().display().to_string(),
            // The test binary is no borglet: shims run from the real one.
            "--shim-exe".into(),
            env!("CARGO_BIN_EXE_borglet-shim").into(),
        ];
        if !extra.contains(&"--on-exit") {
            args.extend(["--on-exit".into(), "stop".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = Config::try_parse_from(args).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(borglet::run(listener, config, shutdown.clone()));
        let credential = data_dir.path().join(borglet::credential::FILE);
        if master.credential.is_some() {
            // Syncs are refused until the borglet holds the credential the stub issues.
            let started = tokio::time::Instant::now();
            while !credential.exists() && started.elapsed() < DEADLINE {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        TestBorglet {
            url,
            name,
            client: master.client(),
            data_dir,
            master,
            epoch: 1,
            shutdown,
            handle: Some(handle),
            pids: Default::default(),
            keep_tasks: false,
        }
    }

    pub fn request(&self, attempts: &[AttemptSpec], ack: &[AttemptId]) -> SyncRequest {
        SyncRequest {
            epoch: self.epoch,
            machine: self.name.clone(),
            attempts: attempts.to_vec(),
            ack: ack.to_vec(),
            nudge_token: None,
        }
    }

    pub async fn post_sync(&self, req: &SyncRequest) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/sync", self.url))
            .json(req)
            .send()
            .await
            .unwrap()
    }

    /// One sync that must succeed.
    pub async fn sync(&self, attempts: &[AttemptSpec], ack: &[AttemptId]) -> SyncResponse {
        let resp = self.post_sync(&self.request(attempts, ack)).await;
        assert_eq!(
            resp.status(),
            200,
            "sync failed: {}",
            resp.text().await.unwrap()
        );
        let body: SyncResponse = resp.json().await.unwrap();
        assert_eq!(body.machine, self.name);
        let mut pids = self.pids.lock().unwrap();
        for a in &body.attempts {
            match (a.phase, a.pid) {
                (AttemptPhase::Running | AttemptPhase::Stopping, Some(pid)) => pids.insert(pid),
                (_, Some(pid)) => pids.remove(&pid),
                _ => false,
            };
        }
        body
    }

    /// Sync repeatedly until the report of `id` satisfies `cond`.
    pub async fn sync_until(
        &self,
        attempts: &[AttemptSpec],
        id: AttemptId,
        what: &str,
        cond: impl Fn(&AttemptReport) -> bool,
    ) -> AttemptReport {
        eventually(what, || async {
            let resp = self.sync(attempts, &[]).await;
            find(&resp, id).filter(|r| cond(r)).cloned()
        })
        .await
    }

    pub fn sandbox(&self, id: AttemptId) -> PathBuf {
        self.data_dir.path().join("attempts").join(id.to_string())
    }

    /// Attempt `id`'s records, in the default runtime dir (`<data-dir>/run`).
    pub fn records(&self, id: AttemptId) -> PathBuf {
        self.data_dir
            .path()
            .join("run/attempts")
            .join(id.to_string())
    }

    pub async fn logs(&self, id: &str, query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/attempts/{id}/logs{query}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// Shut down, handing back the data dir and name (to start it again on them).
    /// Its tasks are left to the next borglet (not killed when this one drops).
    pub async fn stop_keeping_data(mut self) -> (tempfile::TempDir, String) {
        self.shutdown().await.unwrap();
        self.pids.lock().unwrap().clear();
        self.keep_tasks = true;
        let dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        (dir, self.name.clone())
    }

    /// Cancel the shutdown token and wait for `run` to return.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => tokio::time::timeout(DEADLINE, h)
                .await
                .expect("borglet did not shut down in time")
                .expect("borglet task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestBorglet {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for pid in self.pids.lock().unwrap().iter() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !self.keep_tasks {
            remove_cgroups(&self.name);
        }
    }
}

/// This test borglet's cgroups in every hierarchy (`borg/<name>` and whatever
/// attempts are left under it), so tests leave no directories behind. Best effort:
/// a cgroup whose last process is still exiting is retried briefly.
pub fn remove_cgroups(machine: &str) {
    let mounts = borglet::isolation::read_mounts();
    let parent = borglet::isolation::parent_path("borg", machine);
    let roots = mounts.unified.iter().chain(mounts.v1.values());
    for root in roots {
        let dir = root.join(&parent);
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        for child in children.filter_map(|e| e.ok()) {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                let cg = child.path();
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while std::fs::remove_dir(&cg).is_err() && std::time::Instant::now() < deadline {
                    if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|l| l.parse().ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

pub fn find(resp: &SyncResponse, id: AttemptId) -> Option<&AttemptReport> {
    resp.attempts.iter().find(|a| a.id == id)
}

pub fn phase_of(resp: &SyncResponse, id: AttemptId) -> Option<AttemptPhase> {
    find(resp, id).map(|a| a.phase)
}

// ---------- builders ----------

pub struct AttemptBuilder(AttemptSpec);

impl AttemptBuilder {
    pub fn new(command: &[&str]) -> Self {
        AttemptBuilder(AttemptSpec {
            id: AttemptId::new(),
            job: "test".into(),
            index: 0,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
            // The spec's defaults: isolation caps memory at the request.
            resources: Capacity {
                cpu: MilliCpu(100),
                memory: Bytes(64 << 20),
                disk: Bytes(0),
            },
            kill_grace_ms: 5_000,
            memory_limit: None,
            cpu_limit: None,
            ports: vec![],
            health: None,
            fence_after_ms: None,
            restart: None,
        })
    }

    pub fn sh(script: &str) -> Self {
        Self::new(&["/bin/sh", "-c", script])
    }

    pub fn job(mut self, job: &str, index: i32) -> Self {
        self.0.job = job.into();
        self.0.index = index;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.0.env.insert(k.into(), v.into());
        self
    }

    /// Restarted in place: `max_restarts` None = a service.
    pub fn restart(mut self, max_restarts: Option<u32>, backoff_ms: u64) -> Self {
        self.0.restart = Some(borg_shared::wire::InPlaceRestart {
            max_restarts,
            backoff_ms,
        });
        self
    }

    /// Probed as `probe` says.
    pub fn health(mut self, probe: borg_shared::wire::HealthProbe) -> Self {
        self.0.health = Some(probe);
        self
    }

    /// Host ports given to the task as `BORG_PORT0..`.
    pub fn ports(mut self, ports: &[u16]) -> Self {
        self.0.ports = ports.to_vec();
        self
    }

    pub fn grace_ms(mut self, ms: u64) -> Self {
        self.0.kill_grace_ms = ms;
        self
    }

    pub fn memory(mut self, bytes: u64) -> Self {
        self.0.resources.memory = Bytes(bytes);
        self
    }

    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.0.memory_limit = Some(Bytes(bytes));
        self
    }

    pub fn cpu_limit(mut self, milli: u64) -> Self {
        self.0.cpu_limit = Some(MilliCpu(milli));
        self
    }

    pub fn build(self) -> AttemptSpec {
        self.0
    }
}

// ---------- process checks ----------

/// (state, pgrp) of a process from /proc, or None if there is no such process.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// A zombie has finished running; only its parent's reaping is left.
pub fn pid_running(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Whether any live (non-zombie) process is in process group `pgid`.
pub fn group_running(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .any(|(state, pgrp)| pgrp == pgid && state != 'Z')
}

/// `kill(pid, 0)`: ESRCH means the pid no longer exists at all.
pub fn pid_exists(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The cgroup directory of `pid` for `controller` (v1) or the unified one (v2).
pub fn cgroup_dir(pid: i32, mode: borg_shared::wire::IsolationMode, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounts = borglet::isolation::read_mounts();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let root = match mode {
            borg_shared::wire::IsolationMode::V2 if controllers.is_empty() => {
                mounts.unified.clone().unwrap()
            }
            borg_shared::wire::IsolationMode::V1
                if controllers.split(',').any(|c| c == controller) =>
            {
                mounts.v1[controller].clone()
            }
            _ => continue,
        };
        return root.join(path.trim_start_matches('/'));
    }
    panic!("pid {pid} is in no {controller} cgroup: {text}");
}

/// The memory cgroup (v1) or the cgroup (v2) that the launch record in
/// `records` (an attempt's record dir) names for its current run.
pub fn recorded_cgroup(records: &std::path::Path) -> PathBuf {
    let launch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(records.join("launch.json")).unwrap()).unwrap();
    let cg = &launch["cgroup"];
    let dir = cg["v1"]["memory"]
        .as_str()
        .or_else(|| cg["v2"]["dir"].as_str())
        .unwrap_or_else(|| panic!("no cgroup in the launch record: {launch}"));
    PathBuf::from(dir)
}

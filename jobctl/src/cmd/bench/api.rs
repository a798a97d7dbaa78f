//! The few API calls the bench makes, with its own tolerant views of the
//! answers: the master's store is being rewritten, so only the fields the bench
//! needs are read (`POST /v1/jobs` is not trusted to carry `tasks`; events may
//! gain a `kind` and carry their states as plain strings).

use crate::client::error_from_body;
use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A job as `GET /v1/jobs` and `GET /v1/jobs/{name}` show it.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub task_counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub tasks: Option<Vec<Task>>,
    #[serde(default)]
    pub events: Option<Vec<Event>>,
}

impl Job {
    pub fn count(&self, state: &str) -> u64 {
        self.task_counts.get(state).copied().unwrap_or(0)
    }

    pub fn task_state(&self, index: i64) -> Option<&str> {
        let tasks = self.tasks.as_ref()?;
        let task = tasks.iter().find(|t| t.index == index)?;
        Some(task.state.as_str())
    }

    /// When task `index` first entered `state`, by the server's clock.
    pub fn event_time(&self, index: i64, state: &str) -> Option<DateTime<Utc>> {
        self.events
            .as_deref()?
            .iter()
            .filter(|e| e.is_task() && e.task_index == Some(index))
            .filter(|e| e.to_state() == Some(state))
            .map(|e| e.time)
            .min()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Task {
    pub index: i64,
    pub state: String,
}

/// An event row: only what the bench reads, every field but `time` optional.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub id: Value,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub task_index: Option<i64>,
    #[serde(default)]
    pub from: Value,
    #[serde(default)]
    pub to: Value,
    #[serde(default)]
    pub kind: Option<String>,
}

impl Event {
    pub fn is_task(&self) -> bool {
        matches!(self.kind.as_deref(), None | Some("task"))
    }

    pub fn to_state(&self) -> Option<&str> {
        self.to.as_str()
    }
}

#[derive(Debug, Deserialize)]
struct JobList {
    jobs: Vec<Job>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MachineList {
    machines: Vec<Machine>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Machine {
    state: String,
}

/// `replicas` tasks of `/bin/true` (10m cpu, 4Mi): every one a real fork and exec.
pub fn true_job(name: &str, replicas: u64) -> Value {
    json!({
        "name": name,
        "kind": "batch",
        "replicas": replicas,
        "task": {
            "command": ["/bin/true"],
            "resources": {"cpu": "10m", "memory": "4Mi"}
        }
    })
}

/// One HTTP client on the master (each concurrent bench client makes its own).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(master: &str, token: Option<String>) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("jobctl-bench/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: master.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn master(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Send, and say in one line what went wrong.
    async fn send(&self, what: &str, req: RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach the master at {}: is it running?", self.base)
            } else {
                anyhow!("{what}: {e}")
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(anyhow!("{what}: {}", error_from_body(status, &body)))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        req: RequestBuilder,
    ) -> anyhow::Result<T> {
        let bytes = self.send(what, req).await?.bytes().await?;
        serde_json::from_slice(&bytes).with_context(|| format!("{what}: unexpected answer"))
    }

    /// `POST /v1/jobs`; the answer's body is not read (it may not carry tasks).
    pub async fn submit(&self, spec: &Value) -> anyhow::Result<StatusCode> {
        let req = self.request(Method::POST, "/v1/jobs").json(spec);
        let resp = self.send("POST /v1/jobs", req).await?;
        let status = resp.status();
        let _ = resp.bytes().await;
        Ok(status)
    }

    pub async fn job(&self, name: &str) -> anyhow::Result<Job> {
        let req = self.request(Method::GET, &format!("/v1/jobs/{name}"));
        self.json("GET /v1/jobs/{name}", req).await
    }

    /// `GET /v1/jobs`: every job, without tasks, page by page.
    pub async fn jobs(&self) -> anyhow::Result<Vec<Job>> {
        let mut jobs = Vec::new();
        let mut path = "/v1/jobs?limit=1000".to_string();
        loop {
            let req = self.request(Method::GET, &path);
            let page = self.json::<JobList>("GET /v1/jobs", req).await?;
            jobs.extend(page.jobs);
            match page.next {
                Some(next) => path = format!("/v1/jobs?limit=1000&after={next}"),
                None => return Ok(jobs),
            }
        }
    }

    /// `GET path`, the whole body read; its length in bytes.
    pub async fn get(&self, path: &str) -> anyhow::Result<usize> {
        let what = format!("GET {path}");
        let resp = self.send(&what, self.request(Method::GET, path)).await?;
        let body = resp.bytes().await.with_context(|| what.clone())?;
        Ok(body.len())
    }

    pub async fn healthz(&self) -> anyhow::Result<()> {
        let req = self
            .request(Method::GET, "/healthz")
            .timeout(Duration::from_secs(2));
        self.send("GET /healthz", req).await.map(drop)
    }

    pub async fn machines_up(&self) -> anyhow::Result<usize> {
        let mut up = 0;
        let mut path = "/v1/machines?limit=1000".to_string();
        loop {
            let req = self.request(Method::GET, &path);
            let list: MachineList = self.json("GET /v1/machines", req).await?;
            up += list.machines.iter().filter(|m| m.state == "up").count();
            match list.next {
                Some(next) => path = format!("/v1/machines?limit=1000&after={next}"),
                None => return Ok(up),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_tolerantly() {
        let job: Job = serde_json::from_value(json!({
            "name": "j", "state": "succeeded", "extra": 1,
            "task_counts": {"succeeded": 1},
            "tasks": [{"index": 0, "state": "succeeded", "machine": "m1"}],
            "events": [
                {"id": 1, "time": "2026-01-01T00:00:00.000Z", "task_index": 0, "from": null, "to": "pending"},
                {"id": "2", "time": "2026-01-01T00:00:00.010Z", "task_index": 0, "from": "pending", "to": "assigned", "kind": "task"},
                {"id": 3, "time": "2026-01-01T00:00:00.020Z", "task_index": 0, "from": "starting", "to": "running"},
                {"id": 4, "time": "2026-01-01T00:00:00.005Z", "to": "running", "kind": "job"},
                {"id": 5, "time": "2026-01-01T00:00:00.900Z", "task_index": 0, "to": "succeeded"}
            ]
        }))
        .unwrap();
        assert_eq!(job.count("succeeded"), 1);
        assert_eq!(job.count("failed"), 0);
        assert_eq!(job.task_state(0), Some("succeeded"));
        let pending = job.event_time(0, "pending").unwrap();
        let running = job.event_time(0, "running").unwrap();
        assert_eq!((running - pending).num_milliseconds(), 20);
        assert!(job.event_time(0, "failed").is_none());
        // A summary without tasks or events is fine too.
        let bare: Job = serde_json::from_value(json!({"name": "j", "state": "pending"})).unwrap();
        assert!(bare.task_state(0).is_none());
    }
}

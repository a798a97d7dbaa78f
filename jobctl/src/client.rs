//! The master's REST API as jobctl uses it: one pooled `reqwest::Client`, one
//! method per call, and one error type that says in a single line what went
//! wrong (unreachable master, the API's own error body, or an odd answer).

mod operate;
mod plan;
mod rollout;
mod tokens;

use borg_shared::masters::Masters;

use borg_shared::quota::{QuotaSpec, QuotaView};
use borg_shared::wire::{JobList, JobView, LogStream, MachineList};
use borg_shared::{ApiError, ErrorBody};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::path::Path;
use std::time::Duration;

/// Calls that answer at once get this long; log streams are not bounded.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows asked for per page of a list (the API's most).
const LIST_PAGE: u32 = 1000;
/// Submissions refused for the rate (429) are tried again up to this many times in all.
const SUBMIT_TRIES: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{url}` is not a valid master URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "cannot reach the master at {master}: is it running? (jobctl dev starts a local cell)"
    )]
    Unreachable { master: String },
    #[error("the master at {master} did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { master: String },
    /// The API refused the request and said why.
    #[error("{}", api_error_line(.error))]
    Api { status: StatusCode, error: ApiError },
    /// A failure status without the API's error body (a proxy, a crashed handler).
    #[error("the master answered {status}{}", body_suffix(.body))]
    Status { status: StatusCode, body: String },
    #[error("unexpected answer from the master to {what}: {reason}")]
    Decode { what: String, reason: String },
    /// TLS failed: a CA that is not the master's, or a master not serving TLS.
    #[error("cannot talk securely to the master at {master}: {reason}")]
    Tls { master: String, reason: String },
    #[error("talking to the master at {master}: {reason}")]
    Transport { master: String, reason: String },
}

/// `task.resources.cpu: `lots` is not a number (invalid_spec)`, or without a field
/// `no job named x (not_found)`.
pub fn api_error_line(error: &ApiError) -> String {
    match &error.field {
        Some(field) if !field.is_empty() => {
            format!("{field}: {} ({})", error.message, error.code)
        }
        _ => format!("{} ({})", error.message, error.code),
    }
}

fn body_suffix(body: &str) -> String {
    let first = body.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        Some(line) => format!(": {}", truncate(line, 200)),
        None => String::new(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What `POST /v1/jobs` answered.
#[derive(Debug)]
pub struct Submitted {
    pub job: JobView,
    /// false when the job was already live with an identical spec (200).
    pub created: bool,
}

pub struct Client {
    http: reqwest::Client,
    masters: Masters,
    /// The master URL(s) as the user wrote them, for messages.
    master: String,
    token: Option<String>,
}

impl Client {
    /// A client of `master` (one URL or several, comma-separated).
    pub fn new(master: &str, token: Option<String>) -> Result<Client, ClientError> {
        Client::with_ca(master, token, None)
    }

    /// [`Client::new`], trusting only the cluster CA in the file `ca` (PEM) for https.
    pub fn with_ca(
        master: &str,
        token: Option<String>,
        ca: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let masters = Masters::parse(master).map_err(|e| ClientError::BadUrl {
            url: e.url,
            reason: e.reason,
        })?;
        let transport = |reason: String| ClientError::Transport {
            master: master.to_string(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("jobctl/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let config = borg_shared::tls::client_config(ca, None)
                .map_err(|e| transport(format!("{e} (--ca-cert, BORG_CA_CERT)")))?;
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder.build().map_err(|e| transport(e.to_string()))?;
        Ok(Client {
            http,
            masters,
            master: master
                .split(',')
                .map(|m| m.trim().trim_end_matches('/'))
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join(","),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    pub fn master(&self) -> &str {
        &self.master
    }

    /// The current master's URL + path segments, each escaped.
    fn url(&self, segments: &[&str]) -> Url {
        self.masters.url(segments)
    }

    /// Send to the master that answered last, failing over to the others
    /// while one cannot be reached or answers 503.
    async fn execute(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let req = req.build().map_err(|e| self.transport_error(e))?;
        self.masters
            .execute(&self.http, req)
            .await
            .map_err(|e| self.transport_error(e))
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let req = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Send, and turn transport failures and non-2xx answers into a `ClientError`.
    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = self.execute(req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(error_from_body(status, &body))
    }

    /// A failed send or body read, said in the user's terms.
    pub fn transport_error(&self, e: reqwest::Error) -> ClientError {
        let master = self.master.clone();
        if let Some(reason) = borg_shared::tls::failure(&e) {
            let master = e
                .url()
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or(master);
            ClientError::Tls { master, reason }
        } else if e.is_connect() {
            ClientError::Unreachable { master }
        } else if e.is_timeout() {
            ClientError::Timeout { master }
        } else {
            ClientError::Transport {
                master,
                reason: error_chain(&e),
            }
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        resp: Response,
    ) -> Result<T, ClientError> {
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// `POST /v1/jobs` with the spec as JSON. Past the master's submit rate
    /// (429) it waits as `Retry-After` says and tries again, a few times.
    pub async fn submit(&self, spec: &serde_json::Value) -> Result<Submitted, ClientError> {
        let mut tries = 0;
        let resp = loop {
            let req = self
                .request(Method::POST, &["v1", "jobs"])
                .timeout(REQUEST_TIMEOUT)
                .json(spec);
            let resp = self.execute(req).await?;
            tries += 1;
            if resp.status() != StatusCode::TOO_MANY_REQUESTS || tries >= SUBMIT_TRIES {
                break resp;
            }
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 30);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(error_from_body(status, &body));
        }
        let created = resp.status() != StatusCode::OK;
        let job = self.json("POST /v1/jobs", resp).await?;
        Ok(Submitted { job, created })
    }

    /// `GET /v1/jobs/{name}`: the job with its tasks and recent events.
    pub async fn job(&self, name: &str) -> Result<JobView, ClientError> {
        let req = self
            .request(Method::GET, &["v1", "jobs", name])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("GET /v1/jobs/{name}", resp).await
    }

    /// The job with every task: follows `tasks_next` page by page.
    pub async fn job_with_all_tasks(&self, name: &str) -> Result<JobView, ClientError> {
        let mut job = self.job(name).await?;
        while let Some(after) = job.tasks_next.take() {
            let mut req = self
                .request(Method::GET, &["v1", "jobs", name])
                .timeout(REQUEST_TIMEOUT);
            req = req.query(&[("tasks_after", after.to_string())]);
            let resp = self.send(req).await?;
            let page: JobView = self.json("GET /v1/jobs/{name}", resp).await?;
            job.tasks
                .get_or_insert_with(Vec::new)
                .extend(page.tasks.unwrap_or_default());
            job.tasks_next = page.tasks_next;
        }
        Ok(job)
    }

    /// Every job (newest first), following the list's pages.
    pub async fn jobs(&self) -> Result<JobList, ClientError> {
        let mut all = JobList {
            jobs: Vec::new(),
            next: None,
        };
        let mut after: Option<String> = None;
        loop {
            let page: JobList = self.list_page(&["v1", "jobs"], after.as_deref()).await?;
            all.jobs.extend(page.jobs);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Every machine (by name), following the list's pages.
    pub async fn machines(&self) -> Result<MachineList, ClientError> {
        let mut all = MachineList {
            machines: Vec::new(),
            next: None,
        };
        let mut after: Option<String> = None;
        loop {
            let page: MachineList = self
                .list_page(&["v1", "machines"], after.as_deref())
                .await?;
            all.machines.extend(page.machines);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of a list, as large as the API gives.
    async fn list_page<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
        after: Option<&str>,
    ) -> Result<T, ClientError> {
        let mut query = vec![("limit", LIST_PAGE.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let req = self
            .request(Method::GET, segments)
            .query(&query)
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json(&format!("GET /{}", segments.join("/")), resp)
            .await
    }

    /// `GET /v1/quotas/{owner}`.
    pub async fn quota(&self, owner: &str) -> Result<QuotaView, ClientError> {
        let req = self
            .request(Method::GET, &["v1", "quotas", owner])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("GET /v1/quotas/{owner}", resp).await
    }

    /// `PUT /v1/quotas/{owner}`: the answer is the quota as now set.
    pub async fn set_quota(&self, owner: &str, spec: &QuotaSpec) -> Result<QuotaView, ClientError> {
        let req = self
            .request(Method::PUT, &["v1", "quotas", owner])
            .timeout(REQUEST_TIMEOUT)
            .json(spec);
        let resp = self.send(req).await?;
        self.json("PUT /v1/quotas/{owner}", resp).await
    }

    /// `POST /v1/jobs/{name}/kill`. The answer's body is not needed.
    pub async fn kill(&self, name: &str) -> Result<(), ClientError> {
        let req = self
            .request(Method::POST, &["v1", "jobs", name, "kill"])
            .timeout(REQUEST_TIMEOUT);
        self.send(req).await.map(drop)
    }

    /// `GET /v1/jobs/{job}/tasks/{index}/logs`: the response, to be streamed by the caller.
    pub async fn logs(
        &self,
        job: &str,
        index: u32,
        stream: LogStream,
        tail: Option<u64>,
        follow: bool,
        previous: bool,
    ) -> Result<Response, ClientError> {
        let index = index.to_string();
        let mut query: Vec<(&str, String)> = vec![("stream", stream.file_name().to_string())];
        if previous {
            query.push(("previous", "true".to_string()));
        }
        if let Some(tail) = tail {
            query.push(("tail", tail.to_string()));
        }
        if follow {
            query.push(("follow", "true".to_string()));
        }
        let mut req = self
            .request(Method::GET, &["v1", "jobs", job, "tasks", &index, "logs"])
            .query(&query);
        if !follow {
            req = req.timeout(REQUEST_TIMEOUT);
        }
        self.send(req).await
    }

    /// `GET /v1/events`: the open stream, to be read by `crate::events`.
    /// `last_event_id` resumes after that event.
    pub async fn events(
        &self,
        query: &[(&str, String)],
        last_event_id: Option<&str>,
    ) -> Result<Response, ClientError> {
        let mut req = self.request(Method::GET, &["v1", "events"]).query(query);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        self.send(req).await
    }

    /// `GET /v1/resolve/{job}`: where the job's running tasks are.
    pub async fn resolve(&self, job: &str) -> Result<borg_shared::naming::Resolved, ClientError> {
        let req = self
            .request(Method::GET, &["v1", "resolve", job])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("GET /v1/resolve/{job}", resp).await
    }

    /// The master's version, from its OpenAPI document.
    pub async fn master_version(&self) -> Result<String, ClientError> {
        let req = self
            .request(Method::GET, &["openapi.json"])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        let doc: serde_json::Value = self.json("GET /openapi.json", resp).await?;
        Ok(doc["info"]["version"].as_str().unwrap_or("?").to_string())
    }

    /// `GET /healthz` answers 2xx.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let req = self
            .request(Method::GET, &["healthz"])
            .timeout(Duration::from_secs(2));
        self.send(req).await.map(drop)
    }
}

/// A failure answer: the API's `{"error":{...}}` body when it is one.
pub fn error_from_body(status: StatusCode, body: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api { status, error },
        Err(_) => ClientError::Status {
            status,
            body: body.to_string(),
        },
    }
}

/// `e` and its causes on one line, skipping repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_names_the_field() {
        let body = r#"{"error":{"code":"invalid_spec","message":"`lots` is not a number","field":"task.resources.cpu"}}"#;
        let err = error_from_body(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            err.to_string(),
            "task.resources.cpu: `lots` is not a number (invalid_spec)"
        );
    }

    #[test]
    fn api_error_without_field() {
        let body = r#"{"error":{"code":"not_found","message":"no job named nope"}}"#;
        let err = error_from_body(StatusCode::NOT_FOUND, body);
        assert_eq!(err.to_string(), "no job named nope (not_found)");
    }

    #[test]
    fn other_bodies_keep_the_status_and_first_line() {
        let err = error_from_body(StatusCode::BAD_GATEWAY, "upstream down\nmore detail\n");
        assert_eq!(
            err.to_string(),
            "the master answered 502 Bad Gateway: upstream down"
        );
        let err = error_from_body(StatusCode::INTERNAL_SERVER_ERROR, "");
        assert_eq!(
            err.to_string(),
            "the master answered 500 Internal Server Error"
        );
    }

    #[test]
    fn urls_escape_user_segments() {
        let c = Client::new("http://127.0.0.1:7700/", None).unwrap();
        assert_eq!(
            c.url(&["v1", "jobs", "a/b c"]).as_str(),
            "http://127.0.0.1:7700/v1/jobs/a%2Fb%20c"
        );
        assert_eq!(c.master(), "http://127.0.0.1:7700");
        let c = Client::new("http://proxy/borg", None).unwrap();
        assert_eq!(c.url(&["healthz"]).as_str(), "http://proxy/borg/healthz");
    }

    #[test]
    fn bad_master_urls_are_refused() {
        assert!(matches!(
            Client::new("127.0.0.1:7700", None),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(Client::new("not a url", None).is_err());
    }
}

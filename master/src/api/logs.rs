//! `/v1/jobs/{name}/tasks/{index}/logs`: proxied from the borglet that ran the
//! task's newest attempt, streamed through without buffering (so `follow=true`
//! reaches the client line by line as the task writes). `previous=true`: the
//! run before the current one, i.e. the newest attempt's run before its last
//! in-place restart, else the attempt before the newest.

use super::params::known_name;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use borg_shared::wire::LogStream;
use borg_shared::{AttemptId, ErrorBody};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The most lines `tail` may ask for.
const MAX_TAIL: u64 = 1_000_000_000;

/// A task in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read as a tuple by the handler; here for the document
struct TaskPath {
    /// The job's name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    name: String,
    /// The task's index within the job (0-based).
    #[param(minimum = 0)]
    index: i32,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(logs))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Which stream to read.
    #[param(inline)]
    #[serde(default)]
    stream: LogStream,
    /// Only the last this many lines.
    #[param(minimum = 0, maximum = 1_000_000_000)]
    tail: Option<u64>,
    /// Keep streaming until the attempt ends (the borglet decides when).
    #[serde(default)]
    follow: bool,
    /// The run before the current one: before the newest attempt's last in-place
    /// restart, else the task's attempt before its newest (`follow` is ignored).
    #[serde(default)]
    previous: bool,
}

/// A task's output: its newest attempt's stdout or stderr, proxied from the borglet that ran it.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/tasks/{index}/logs",
    operation_id = "task_logs",
    tag = "jobs",
    params(TaskPath, LogQuery),
    responses(
        (status = 200, description = "The log text, streamed", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 400, description = "The query string does not parse, e.g. a parameter given twice (`bad_request`)", body = ErrorBody),
        (status = 404, description = "No such task, it has not run yet, the borglet has no logs for it, or (`previous`) it has no previous run (`not_found`)", body = ErrorBody),
        (status = 422, description = "A bad query parameter or task index, or the borglet refused the log (not a file in the task's sandbox); `field` names it (`invalid_spec`)", body = ErrorBody),
        (status = 502, description = "The borglet did not answer or failed (`borglet_unreachable`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, index)): Path<(String, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::Invalid {
        field: "stream".into(),
        message: e.body_text(),
    })?;
    known_name("job", &name)?;
    let index: i32 = index
        .parse()
        .ok()
        .filter(|i| *i >= 0)
        .ok_or_else(|| ApiError::Invalid {
            field: "index".into(),
            message: format!("`{}` is not a task index", index.escape_debug()),
        })?;
    if q.tail.is_some_and(|t| t > MAX_TAIL) {
        return Err(ApiError::Invalid {
            field: "tail".into(),
            message: format!("at most {MAX_TAIL} lines"),
        });
    }
    caller.job(&state.store, &name, false).await?;
    let loc = state
        .store
        .locate_task(&name, index)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task {name}/{index}")))?;
    let Some((attempt, address)) = loc.attempt else {
        let why = loc.reason.map(|r| format!(": {r}")).unwrap_or_default();
        return Err(ApiError::NotFound(format!(
            "{name}/{index} has not run yet ({}{why})",
            loc.state
        )));
    };
    let fetch = Fetch {
        state: &state,
        stream: q.stream,
        tail: q.tail,
        task: format!("{name}/{index}"),
    };
    let credential = loc.credential_hash.as_deref();
    let resp = match q.previous {
        false => {
            fetch
                .get(attempt, &address, credential, q.follow, false)
                .await?
        }
        true => match fetch.get(attempt, &address, credential, false, true).await {
            Err(ApiError::NotFound(_)) => {
                let Some((before, address, credential)) =
                    state.store.previous_attempt(&name, index).await?
                else {
                    return Err(ApiError::NotFound(format!(
                        "{name}/{index} has no previous run (its attempt has not restarted, and it had no attempt before)"
                    )));
                };
                fetch
                    .get(before, &address, credential.as_deref(), false, false)
                    .await?
            }
            r => r?,
        },
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// One log request to a borglet.
struct Fetch<'a> {
    state: &'a AppState,
    stream: LogStream,
    tail: Option<u64>,
    /// `job/index`, for messages.
    task: String,
}

impl Fetch<'_> {
    /// The log of `attempt` from the borglet at `address`, or why not.
    async fn get(
        &self,
        attempt: AttemptId,
        address: &str,
        credential: Option<&str>,
        follow: bool,
        previous: bool,
    ) -> ApiResult<reqwest::Response> {
        let task = &self.task;
        let mut url = format!(
            "{}/v1/attempts/{attempt}/logs?stream={}",
            address.trim_end_matches('/'),
            self.stream.file_name()
        );
        if let Some(tail) = self.tail {
            url.push_str(&format!("&tail={tail}"));
        }
        if follow {
            url.push_str("&follow=true");
        }
        if previous {
            url.push_str("&previous=true");
        }
        let mut get = self.state.http.get(&url);
        if let Some(key) = credential {
            get = get.bearer_auth(key);
        }
        let resp = get.send().await.map_err(|e| {
            tracing::warn!(%url, error = %e, "fetching logs from borglet");
            ApiError::BadGateway(format!("the borglet at {address} did not answer"))
        })?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(ApiError::NotFound(format!(
                "the borglet at {address} has no logs for {task}"
            ))),
            StatusCode::BAD_REQUEST => {
                tracing::warn!(%url, "the borglet refused a log request");
                Err(ApiError::Invalid {
                    field: "stream".into(),
                    message: format!(
                        "the borglet refused to serve this log of {task} (not a file in the task's sandbox)"
                    ),
                })
            }
            s => {
                tracing::warn!(%url, status = %s, "borglet log request failed");
                Err(ApiError::BadGateway(format!(
                    "the borglet at {address} answered {s}"
                )))
            }
        }
    }
}

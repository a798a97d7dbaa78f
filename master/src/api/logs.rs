//! `/v1/jobs/{name}/tasks/{index}/logs`: proxied from the borglet that ran the
//! task's newest attempt, streamed through without buffering (so `follow=true`
//! reaches the client line by line as the task writes).

use super::params::known_name;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use borg_shared::wire::LogStream;
use borg_shared::ErrorBody;
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
        (status = 404, description = "No such task, it has not run yet, or the borglet has no logs for it (`not_found`)", body = ErrorBody),
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
    let mut url = format!(
        "{}/v1/attempts/{attempt}/logs?stream={}",
        address.trim_end_matches('/'),
        q.stream.file_name()
    );
    if let Some(tail) = q.tail {
        url.push_str(&format!("&tail={tail}"));
    }
    if q.follow {
        url.push_str("&follow=true");
    }
    let mut get = state.http.get(&url);
    if let Some(key) = &loc.credential_hash {
        get = get.bearer_auth(key);
    }
    let resp = get.send().await.map_err(|e| {
        tracing::warn!(%url, error = %e, "fetching logs from borglet");
        ApiError::BadGateway(format!("the borglet at {address} did not answer"))
    })?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(ApiError::NotFound(format!(
                "the borglet at {address} has no logs for {name}/{index}"
            )))
        }
        StatusCode::BAD_REQUEST => {
            tracing::warn!(%url, "the borglet refused a log request");
            return Err(ApiError::Invalid {
                field: "stream".into(),
                message: format!(
                    "the borglet refused to serve this log of {name}/{index} (not a file in the task's sandbox)"
                ),
            });
        }
        s => {
            tracing::warn!(%url, status = %s, "borglet log request failed");
            return Err(ApiError::BadGateway(format!(
                "the borglet at {address} answered {s}"
            )));
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.into()))
}

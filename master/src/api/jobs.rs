//! `/v1/jobs`: submit, list, read, kill.

use super::body::JsonBytes;
use super::{ApiError, ApiResult, AppState};
use crate::store::{
    KillOutcome, SubmitOutcome, TaskPage, DEFAULT_JOB_PAGE, DEFAULT_TASK_PAGE, MAX_JOB_PAGE,
    MAX_TASK_PAGE,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use borg_shared::wire::{JobList, JobView};
use borg_shared::{ErrorBody, JobSpec, JobState};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(detail))
        .routes(routes!(kill))
}

/// Submit a job.
///
/// Submitting the same spec under the same name again is a safe retry (200);
/// a different spec under a live job's name is a conflict (409).
// The body is read raw so that parse errors name the offending field.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "submit_job",
    tag = "jobs",
    request_body(
        content = JobSpec,
        content_type = "application/json",
        description = "The job spec (the JSON form of the YAML users keep in files)"
    ),
    responses(
        (status = 201, description = "The job was committed with its tasks; the answer is its summary (no tasks)", body = JobView),
        (status = 200, description = "A live job has this name and the identical spec; nothing changed", body = JobView),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 409, description = "A live job has this name with a different spec (`conflict`)", body = ErrorBody),
        (status = 422, description = "The spec is well-formed but invalid; `field` names the offending field (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn submit(
    State(state): State<AppState>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let spec = JobSpec::from_json(&body)?;
    refuse_unbuilt(&spec)?;
    match state.store.submit(&spec).await? {
        SubmitOutcome::Created(job) => Ok((StatusCode::CREATED, Json(job))),
        SubmitOutcome::Unchanged(job) => Ok((StatusCode::OK, Json(job))),
        SubmitOutcome::Conflict(job) => Err(ApiError::Conflict(format!(
            "job {} is already {} with a different spec; kill it first or pick another name",
            job.name, job.state
        ))),
    }
}

/// Spec fields parsed but not enforced yet are refused rather than ignored.
fn refuse_unbuilt(spec: &JobSpec) -> ApiResult<()> {
    if spec.update.is_some() {
        return Err(ApiError::Invalid {
            field: "update".into(),
            message: "not supported yet: rolling updates are not built; leave `update` out".into(),
        });
    }
    if spec.task.health.is_some() {
        return Err(ApiError::Invalid {
            field: "task.health".into(),
            message: "not supported yet: health checks are not built; leave `health` out".into(),
        });
    }
    if spec.task.fence_after.is_some() {
        return Err(ApiError::Invalid {
            field: "task.fence_after".into(),
            message: "not supported yet: fencing is not built; leave `fence_after` out".into(),
        });
    }
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>, inline)]
    state: Option<String>,
    /// At most this many of the newest jobs (default 1000, at most 10000).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
}

/// List jobs (without their tasks and events).
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 422, description = "`state` is not a job state, or `limit` is out of range (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<JobList>> {
    let filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|message| ApiError::Invalid {
            field: "state".into(),
            message,
        })?),
    };
    let limit = int_param("limit", q.limit.as_deref())?.unwrap_or(DEFAULT_JOB_PAGE);
    if !(1..=MAX_JOB_PAGE).contains(&limit) {
        return Err(ApiError::Invalid {
            field: "limit".into(),
            message: format!("must be between 1 and {MAX_JOB_PAGE}"),
        });
    }
    let jobs = state.store.list_jobs(filter, limit).await?;
    Ok(Json(JobList { jobs }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DetailQuery {
    /// Only tasks with a higher index (the previous page's `tasks_next`).
    #[param(value_type = Option<i32>)]
    tasks_after: Option<String>,
    /// Tasks per page (default 1000, at most 10000).
    #[param(value_type = Option<u32>)]
    tasks_limit: Option<String>,
}

/// An optional integer query parameter, or a 422 naming it.
fn int_param<T: std::str::FromStr>(field: &str, value: Option<&str>) -> ApiResult<Option<T>> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::Invalid {
            field: field.into(),
            message: format!("`{v}` is not a valid number"),
        }),
    }
}

/// One job with a page of its tasks (by index) and its recent events.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}",
    operation_id = "get_job",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name"), DetailQuery),
    responses(
        (status = 200, description = "The job, with `tasks` and `events`", body = JobView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 422, description = "`tasks_after` or `tasks_limit` is not a valid number (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn detail(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DetailQuery>,
) -> ApiResult<Json<JobView>> {
    let page = TaskPage {
        after: int_param("tasks_after", q.tasks_after.as_deref())?,
        limit: int_param("tasks_limit", q.tasks_limit.as_deref())?.unwrap_or(DEFAULT_TASK_PAGE),
    };
    if !(1..=MAX_TASK_PAGE).contains(&page.limit) {
        return Err(ApiError::Invalid {
            field: "tasks_limit".into(),
            message: format!("must be between 1 and {MAX_TASK_PAGE}"),
        });
    }
    state
        .store
        .job_detail(&name, page)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job named {name}")))
}

/// Kill a live job: pending tasks end at once; placed attempts are told to stop.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/kill",
    operation_id = "kill_job",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job, now killed", body = JobView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "The job has already finished (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn kill(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<JobView>> {
    match state.store.kill_job(&name, "user").await? {
        KillOutcome::Killed(job) => Ok(Json(*job)),
        KillOutcome::NotFound => Err(ApiError::NotFound(format!("no job named {name}"))),
        KillOutcome::AlreadyFinished(s) => {
            Err(ApiError::Conflict(format!("job {name} already {s}")))
        }
    }
}

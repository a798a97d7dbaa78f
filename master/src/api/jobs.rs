//! `/v1/jobs`: submit, list, read, kill (update: `rollout.rs`).

use super::body::JsonBytes;
use super::params::{int_param, known_name, JobName, JobPage, PageQuery};
use super::{ApiError, ApiResult, AppState};
use crate::auth::{AuditTarget, Caller};
use crate::store::{
    JobCursor, KillOutcome, SubmitOutcome, TaskPage, DEFAULT_TASK_PAGE, MAX_TASK_PAGE,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use borg_shared::wire::{JobList, JobView};
use borg_shared::{ErrorBody, JobKind, JobSpec, JobState};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(detail, super::rollout::update))
        .routes(routes!(kill))
}

/// Submit a job.
///
/// Submitting the same spec under the same name again is a safe retry (200);
/// a different spec under a live job's name is a conflict (409). The job's
/// owner is the token's: a spec without `owner` gets it; a spec naming another
/// owner is refused (403) unless the token is an admin's.
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
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (1 MiB by default) (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "The spec is well-formed but invalid; `field` names the offending field (`invalid_spec`). Besides the schema's bounds: `task.resources.cpu` must be more than 0, `cpu_limit` at least `cpu`, `memory_limit` at least `memory` and 4Mi (without one, `memory` at least 4Mi), a constraint other than `exists` needs a value, `task.fence_after` is at least 1s, and parts of `update` and `task.health` are not supported yet", body = ErrorBody),
        (status = 429, description = "This caller submits faster than the master's `--submit-rate` allows; `Retry-After` says when to retry (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before submitting again"))),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Response {
    let mut spec = match JobSpec::from_json(&body) {
        Ok(spec) => spec,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let target = AuditTarget(format!("job={}", spec.name));
    let answer = submit_owned(&state, &caller, &body, &mut spec).await;
    (Extension(target), answer).into_response()
}

/// Only the `owner` of a spec, to tell "not given" from the default.
#[derive(Deserialize)]
struct OwnerField {
    owner: Option<String>,
}

/// The `owner` a spec's body names, if any.
pub(super) fn given_owner(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<OwnerField>(body)
        .ok()
        .and_then(|o| o.owner)
}

async fn submit_owned(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
    spec: &mut JobSpec,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    match given_owner(body) {
        None => spec.owner = caller.owner.clone(),
        Some(owner) if !caller.may_change(&owner) => {
            return Err(ApiError::Forbidden(format!(
                "token {} submits jobs as {}; only an admin submits for another owner ({owner})",
                caller.token, caller.owner
            )))
        }
        Some(_) => {}
    }
    let spec = &*spec;
    refuse_unbuilt(spec)?;
    match state.store.submit(spec).await? {
        SubmitOutcome::Created(job) => Ok((StatusCode::CREATED, Json(job))),
        SubmitOutcome::Unchanged(job) => Ok((StatusCode::OK, Json(job))),
        SubmitOutcome::Conflict(job) => Err(ApiError::Conflict(format!(
            "job {} is already {} with a different spec; kill it first or pick another name",
            job.name, job.state
        ))),
    }
}

/// Spec fields parsed but not enforced yet are refused rather than ignored.
pub(super) fn refuse_unbuilt(spec: &JobSpec) -> ApiResult<()> {
    if spec.update.is_some() && spec.kind != JobKind::Service {
        return Err(ApiError::Invalid {
            field: "update".into(),
            message: "only services roll: a batch job is not updated in place; leave `update` out"
                .into(),
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
}

/// List jobs, newest first, a page at a time (without their tasks and events).
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(ListQuery, JobPage),
    responses(
        (status = 200, description = "A page of jobs; `next` is where the next page starts", body = JobList),
        (status = 400, description = "The query string does not parse, e.g. a parameter given twice (`bad_request`)", body = ErrorBody),
        (status = 422, description = "`state` is not a job state, `limit` is out of range or `after` is not a page's `next` (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<JobList>> {
    let filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|message| ApiError::Invalid {
            field: "state".into(),
            message,
        })?),
    };
    let limit = page.limit()?;
    let after = match page.after()? {
        None => None,
        Some(a) => Some(JobCursor::decode(a).ok_or_else(|| ApiError::Invalid {
            field: "after".into(),
            message: "not a page cursor: pass the previous page's `next`".into(),
        })?),
    };
    let page = state
        .store
        .list_jobs(filter, caller.list_scope().as_deref(), after, limit)
        .await?;
    Ok(Json(JobList {
        jobs: page.items,
        next: page.next.map(|c| c.encode()),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DetailQuery {
    /// Only tasks with a higher index (the previous page's `tasks_next`).
    #[param(value_type = Option<i32>)]
    tasks_after: Option<String>,
    /// Tasks per page (default 1000, at most 10000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    tasks_limit: Option<String>,
}

/// One job with a page of its tasks (by index) and its recent events.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}",
    operation_id = "get_job",
    tag = "jobs",
    params(JobName, DetailQuery),
    responses(
        (status = 200, description = "The job, with `tasks` and `events`", body = JobView),
        (status = 400, description = "The query string does not parse, e.g. a parameter given twice (`bad_request`)", body = ErrorBody),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 422, description = "`tasks_after` or `tasks_limit` is not a valid number (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DetailQuery>,
) -> ApiResult<Json<JobView>> {
    known_name("job", &name)?;
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
    // The owner is checked on the job read, so what is shown is what was checked.
    state
        .store
        .job_detail(&name, page)
        .await?
        .filter(|job| caller.may_read(&job.owner))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job named {name}")))
}

/// Kill a live job: pending tasks end at once; placed attempts are told to stop.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/kill",
    operation_id = "kill_job",
    tag = "jobs",
    params(JobName),
    responses(
        (status = 200, description = "The job, now killed", body = JobView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "The job has already finished (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<JobView>> {
    known_name("job", &name)?;
    let owner = caller.job(&state.store, &name, true).await?;
    match state
        .store
        .kill_job(&name, Some(&owner), &caller.who())
        .await?
    {
        KillOutcome::Killed(job) => Ok(Json(*job)),
        KillOutcome::NotFound => Err(ApiError::NotFound(format!("no job named {name}"))),
        KillOutcome::AlreadyFinished(s) => {
            Err(ApiError::Conflict(format!("job {name} already {s}")))
        }
    }
}

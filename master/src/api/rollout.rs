//! `PUT /v1/jobs/{name}` (a new spec: a new version rolled out, a scale, or
//! nothing) and `/v1/jobs/{name}/rollout` (progress, pause, resume, undo).

use super::body::JsonBytes;
use super::jobs::refuse_unbuilt;
use super::params::{known_name, JobName};
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::store::{ControlOutcome, UpdateOutcome};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use borg_shared::rollout::RolloutView;
use borg_shared::wire::JobView;
use borg_shared::{ErrorBody, JobSpec};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(undo))
}

/// Update a live service with a full spec.
///
/// A changed spec becomes the job's next version and rolls out: tasks on older
/// versions are replaced at most `update.max_unavailable` at a time, each new
/// one running `update.min_healthy` before the next; if the new version fails,
/// the job rolls back by itself. A changed `replicas` alone is a scale, a
/// changed `update` policy alone is kept without replacing tasks; the identical
/// spec changes nothing (200).
// The body is read raw so that parse errors name the offending field.
#[utoipa::path(
    put,
    path = "/v1/jobs/{name}",
    operation_id = "update_job",
    tag = "jobs",
    params(JobName),
    request_body(content = JobSpec, content_type = "application/json", description = "The full new spec"),
    responses(
        (status = 200, description = "The job: updated (a rollout started; see `version`), scaled, or unchanged", body = JobView),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 404, description = "No live job has this name: submit it with POST /v1/jobs (`not_found`)", body = ErrorBody),
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 409, description = "A batch job, a finished job, or a task at the indexes asked for still stopping from an earlier scale-down (`conflict`)", body = ErrorBody),
        (status = 422, description = "The spec is invalid, or changes a field that stays for the job's life (`kind`, `owner`, `name`); `field` names it (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    known_name("job", &name)?;
    let owner = caller.job(&state.store, &name, true).await?;
    let mut spec = JobSpec::from_json(&body)?;
    // A spec without `owner` keeps the job's; naming another owner is refused
    // below as a change of a field that stays for the job's life.
    if super::jobs::given_owner(&body).is_none() {
        spec.owner = owner;
    }
    refuse_unbuilt(&spec)?;
    if spec.name != name {
        return Err(ApiError::Invalid {
            field: "name".into(),
            message: format!(
                "the spec names `{}` but the path is for job `{name}`",
                spec.name
            ),
        });
    }
    match state.store.update_job(&spec).await? {
        UpdateOutcome::Updated { job, .. }
        | UpdateOutcome::Scaled(job)
        | UpdateOutcome::PolicyChanged(job)
        | UpdateOutcome::Unchanged(job) => Ok((StatusCode::OK, Json(*job))),
        UpdateOutcome::NotFound => Err(ApiError::NotFound(format!(
            "no live job named {name}: submit it with POST /v1/jobs"
        ))),
        UpdateOutcome::AlreadyFinished(s) => Err(ApiError::NotFound(format!(
            "job {name} has already finished ({s}): submit it again with POST /v1/jobs"
        ))),
        UpdateOutcome::Batch(job) => Err(ApiError::Conflict(format!(
            "job {name} is a {} batch job: a batch job is not updated in place; \
             kill it and submit the new spec (or wait for it to finish)",
            job.state
        ))),
        UpdateOutcome::Immutable(e) => Err(e.into()),
        UpdateOutcome::StillStopping { first } => Err(ApiError::Conflict(format!(
            "task {name}/{first} is still stopping from an earlier scale-down; \
             try again once it has stopped"
        ))),
    }
}

/// The job's latest rollout: versions, how many tasks are updated and ready, its state and steps.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/rollout",
    operation_id = "get_rollout",
    tag = "jobs",
    params(JobName),
    responses(
        (status = 200, description = "The rollout (a job never updated: version 1, `done`)", body = RolloutView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    known_name("job", &name)?;
    caller.job(&state.store, &name, false).await?;
    state
        .store
        .rollout(&name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job named {name}")))
}

/// Pause the job's rollout: no more tasks are replaced until it is resumed.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/rollout/pause",
    operation_id = "pause_rollout",
    tag = "jobs",
    params(JobName),
    responses(
        (status = 200, description = "The rollout, paused (also if it already was)", body = RolloutView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "No rollout is in progress (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    let by = may_steer(&state, &caller, &name).await?;
    answer(&name, state.store.pause_rollout(&name, &by).await?)
}

/// Resume a paused rollout.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/rollout/resume",
    operation_id = "resume_rollout",
    tag = "jobs",
    params(JobName),
    responses(
        (status = 200, description = "The rollout, going on (also if it was not paused)", body = RolloutView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "No rollout is in progress (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    let by = may_steer(&state, &caller, &name).await?;
    answer(&name, state.store.resume_rollout(&name, &by).await?)
}

/// Undo the job's rollout: a rollout in progress (or failed) rolls back to the
/// version it started from, a completed one to the version before it; with the
/// same rolling procedure.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/rollout/undo",
    operation_id = "undo_rollout",
    tag = "jobs",
    params(JobName),
    responses(
        (status = 200, description = "The rollout, rolling back", body = RolloutView),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "Nothing to undo: never updated, or already rolled back (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn undo(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    let by = may_steer(&state, &caller, &name).await?;
    answer(&name, state.store.undo_rollout(&name, &by).await?)
}

/// A caller may pause, resume or undo the rollout of a job it may change;
/// answers who it is, for the rollout's reason.
async fn may_steer(state: &AppState, caller: &Caller, name: &str) -> ApiResult<String> {
    known_name("job", name)?;
    caller.job(&state.store, name, true).await?;
    Ok(caller.who())
}

fn answer(name: &str, outcome: ControlOutcome) -> ApiResult<Json<RolloutView>> {
    match outcome {
        ControlOutcome::Changed(v) | ControlOutcome::Unchanged(v) => Ok(Json(*v)),
        ControlOutcome::NotFound => Err(ApiError::NotFound(format!("no job named {name}"))),
        ControlOutcome::Conflict(why) => Err(ApiError::Conflict(why)),
    }
}

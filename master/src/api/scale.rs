//! `POST /v1/jobs/{name}/scale`: change a live service's replica count.

use super::params::{known_name, JobName};
use super::{json_rejection, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::store::ScaleOutcome;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use borg_shared::spec::MAX_REPLICAS;
use borg_shared::wire::JobView;
use borg_shared::ErrorBody;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scale))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The new replica count (1 to 10000).
    #[schema(schema_with = borg_shared::spec::schema::replicas)]
    pub replicas: i64,
}

/// Scale a live service: up adds pending tasks at the next indexes; down stops
/// the highest indexes first.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/scale",
    operation_id = "scale_job",
    tag = "jobs",
    params(JobName),
    request_body(content = ScaleRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The job with its new replica count (unchanged if it already had it)", body = JobView),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 404, description = "No job has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "The job has finished, is a batch job, or a task at the indexes asked for is still stopping from an earlier scale-down (`conflict`; retry once it has stopped)", body = ErrorBody),
        (status = 422, description = "`replicas` is out of range (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn scale(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<ScaleRequest>, JsonRejection>,
) -> ApiResult<Json<JobView>> {
    known_name("job", &name)?;
    let Json(req) = body.map_err(json_rejection)?;
    if !(1..=MAX_REPLICAS).contains(&req.replicas) {
        return Err(ApiError::Invalid {
            field: "replicas".into(),
            message: format!("must be between 1 and {MAX_REPLICAS}, got {}", req.replicas),
        });
    }
    let owner = caller.job(&state.store, &name, true).await?;
    match state
        .store
        .scale_job(&name, Some(&owner), req.replicas as i32)
        .await?
    {
        ScaleOutcome::Scaled(job) | ScaleOutcome::Unchanged(job) => Ok(Json(*job)),
        ScaleOutcome::NotFound => Err(ApiError::NotFound(format!("no job named {name}"))),
        ScaleOutcome::AlreadyFinished(s) => Err(ApiError::Conflict(format!(
            "job {name} has already finished ({s})"
        ))),
        ScaleOutcome::NotAService => Err(ApiError::Conflict(format!(
            "job {name} is a batch job: only services scale (submit another batch job for more work)"
        ))),
        ScaleOutcome::StillStopping { first } => Err(ApiError::Conflict(format!(
            "task {name}/{first} is still stopping from an earlier scale-down; \
             try again once it has stopped"
        ))),
    }
}

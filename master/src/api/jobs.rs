//! `/v1/jobs`: submit, list, read, kill.

use super::{ApiError, ApiResult, AppState};
use crate::store::{KillOutcome, SubmitOutcome};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use borg_shared::wire::{JobList, JobView};
use borg_shared::{JobSpec, JobState};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{name}", get(detail))
        .route("/v1/jobs/{name}/kill", post(kill))
}

/// The body is read raw so that parse errors name the offending field.
async fn submit(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let spec = JobSpec::from_json(&body)?;
    match state.store.submit(&spec).await? {
        SubmitOutcome::Created(job) => Ok((StatusCode::CREATED, Json(job))),
        SubmitOutcome::Unchanged(job) => Ok((StatusCode::OK, Json(job))),
        SubmitOutcome::Conflict(job) => Err(ApiError::Conflict(format!(
            "job {} is already {} with a different spec; kill it first or pick another name",
            job.name, job.state
        ))),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

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
    let jobs = state.store.list_jobs(filter).await?;
    Ok(Json(JobList { jobs }))
}

async fn detail(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<JobView>> {
    state
        .store
        .job_detail(&name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job named {name}")))
}

async fn kill(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<JobView>> {
    match state.store.kill_job(&name, "user").await? {
        KillOutcome::Killed(job) => Ok(Json(*job)),
        KillOutcome::NotFound => Err(ApiError::NotFound(format!("no job named {name}"))),
        KillOutcome::AlreadyFinished(s) => {
            Err(ApiError::Conflict(format!("job {name} already {s}")))
        }
    }
}

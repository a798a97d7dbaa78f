//! `GET /v1/resolve/{job}`: where each running task of a job is, for clients
//! that want to reach it (Borg's BNS).

use super::params::known_name;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Path, State};
use axum::Json;
use borg_shared::naming::{Resolved, ResolvedTask};
use borg_shared::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(resolve))
}

/// The host (and ports) of each running task of a job.
#[utoipa::path(
    get,
    path = "/v1/resolve/{job}",
    operation_id = "resolve",
    tag = "jobs",
    params(("job" = String, Path, description = "The job's name", pattern = "^[a-z0-9][a-z0-9-]{0,62}$")),
    responses(
        (status = 200, description = "The job's running tasks, by index", body = Resolved),
        (status = 404, description = "No job of that name (`not_found`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(job): Path<String>,
) -> ApiResult<Json<Resolved>> {
    known_name("job", &job)?;
    caller.job(&state.store, &job, false).await?;
    let Some(rows) = state.store.running_tasks(&job).await? else {
        return Err(ApiError::NotFound(format!("no job named {job}")));
    };
    let tasks = rows
        .into_iter()
        .map(|(index, machine, address, attempt, ports)| ResolvedTask {
            index,
            host: reqwest::Url::parse(&address)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or(address),
            machine,
            attempt,
            ports: ports
                .into_iter()
                .filter_map(|p| u16::try_from(p).ok())
                .collect(),
        })
        .collect();
    Ok(Json(Resolved { job, tasks }))
}

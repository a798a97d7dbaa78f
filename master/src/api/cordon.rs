//! `POST /v1/machines/{name}/drain` and `/uncordon`: an operator takes a
//! machine out of placement (its tasks are moved off by the leader, within each
//! job's unavailability budget) and puts it back.

use super::params::{known_name, MachineName};
use super::{ApiError, ApiResult, AppState};
use crate::store::CordonOutcome;
use axum::extract::{Path, State};
use axum::Json;
use borg_shared::wire::MachineView;
use borg_shared::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(drain))
        .routes(routes!(uncordon))
}

/// Drain a machine: nothing new is placed there, and its tasks move elsewhere,
/// never more than one task of a job down at once.
#[utoipa::path(
    post,
    path = "/v1/machines/{name}/drain",
    operation_id = "drain_machine",
    tag = "machines",
    params(MachineName),
    responses(
        (status = 200, description = "The machine, now draining", body = MachineView),
        (status = 404, description = "No machine has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "The machine is down (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn drain(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<MachineView>> {
    known_name("machine", &name)?;
    answer(&name, state.store.drain_machine(&name).await?)
}

/// Uncordon a machine: it takes new work again.
#[utoipa::path(
    post,
    path = "/v1/machines/{name}/uncordon",
    operation_id = "uncordon_machine",
    tag = "machines",
    params(MachineName),
    responses(
        (status = 200, description = "The machine, now up", body = MachineView),
        (status = 404, description = "No machine has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "The machine is down (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn uncordon(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<MachineView>> {
    known_name("machine", &name)?;
    answer(&name, state.store.uncordon_machine(&name).await?)
}

fn answer(name: &str, out: CordonOutcome) -> ApiResult<Json<MachineView>> {
    match out {
        CordonOutcome::Changed(m) | CordonOutcome::Unchanged(m) => Ok(Json(*m)),
        CordonOutcome::NotFound => Err(ApiError::NotFound(format!("no machine named {name}"))),
        CordonOutcome::Down => Err(ApiError::Conflict(format!(
            "machine {name} is down; it comes back up when its borglet answers"
        ))),
    }
}

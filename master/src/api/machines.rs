//! `/v1/machines`: borglets register; operators list.

use super::{json_rejection, ApiError, ApiResult, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use borg_shared::spec::validate_name;
use borg_shared::wire::{MachineList, MachineView, RegisterMachine};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/machines", post(register).get(list))
}

async fn register(
    State(state): State<AppState>,
    body: Result<Json<RegisterMachine>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<MachineView>)> {
    let Json(req) = body.map_err(json_rejection)?;
    validate_name(&req.name).map_err(|message| ApiError::Invalid {
        field: "name".into(),
        message,
    })?;
    let url_ok = req.address.starts_with("http://") || req.address.starts_with("https://");
    if !url_ok || reqwest::Url::parse(&req.address).is_err() {
        return Err(ApiError::Invalid {
            field: "address".into(),
            message: format!("`{}` is not an http(s) URL", req.address),
        });
    }
    let (machine, inserted) = state.store.register_machine(&req).await?;
    state.machines_changed.notify_one();
    let status = if inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(machine)))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<MachineList>> {
    Ok(Json(MachineList {
        machines: state.store.list_machines().await?,
    }))
}

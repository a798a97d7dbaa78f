//! `/v1/machines`: borglets register and nudge; operators list.

use super::{json_rejection, ApiError, ApiResult, AppState};
use crate::agents::{admission, Proof, Refusal};
use crate::poller::Nudge;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use borg_shared::agent::{bearer, JOIN_TOKEN_HEADER};
use borg_shared::spec::validate_name;
use borg_shared::wire::{MachineList, MachineRegistered, RegisterMachine};
use borg_shared::ErrorBody;
use borg_store::Enrolled;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(nudge))
}

/// Register a machine (what a borglet does at start-up); registering again updates it.
/// Needs proof: the cluster join token (`x-borg-join-token`) for a new name or the
/// machine's current address, or the machine's own credential (`Authorization:
/// Bearer`) for anything, including a move to another address. A registration
/// with the join token is answered with a new credential, shown once.
#[utoipa::path(
    post,
    path = "/v1/machines",
    operation_id = "register_machine",
    tag = "machines",
    params(
        ("Authorization" = Option<String>, Header, description = "`Bearer <credential>`: the machine's credential"),
        ("x-borg-join-token" = Option<String>, Header, description = "The cluster join token"),
    ),
    request_body(content = RegisterMachine, content_type = "application/json"),
    responses(
        (status = 201, description = "The machine is new", body = MachineRegistered),
        (status = 200, description = "The machine was known; its address, capacity and labels were updated", body = MachineRegistered),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 401, description = "No valid proof: neither the machine's credential nor the join token (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "The join token does not allow this: a known machine at another address, or no join token configured (`forbidden`)", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid; `field` names it (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RegisterMachine>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<MachineRegistered>)> {
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
    if req.ports.first == 0 || req.ports.last < req.ports.first {
        return Err(ApiError::Invalid {
            field: "ports".into(),
            message: format!(
                "port range {}-{} must be non-empty and start at 1 or above",
                req.ports.first, req.ports.last
            ),
        });
    }
    let proof = Proof {
        credential: bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        ),
        join_token: headers
            .get(JOIN_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim),
    };
    let fresh = borg_shared::agent::new_secret()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("no randomness for a credential: {e}")))?;
    let mut verdict = None;
    let enrolled = state
        .store
        .enroll_machine(&req, |known| {
            admission(&state.agents, proof, &req, known, &fresh, &mut verdict)
        })
        .await?;
    let issued = matches!(verdict, Some(Ok(true)));
    let (machine, inserted) = match enrolled {
        Enrolled::Registered { machine, inserted } => (machine, inserted),
        Enrolled::Refused { reason } => {
            tracing::warn!(machine = %req.name, address = %req.address, %reason,
                "machine registration refused");
            return Err(match verdict {
                Some(Err(Refusal::Forbidden(r))) => ApiError::Forbidden(r),
                _ => ApiError::Unauthorized(reason),
            });
        }
    };
    state.machines_changed.notify_one();
    let status = if inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(MachineRegistered {
            machine,
            credential: issued.then_some(fresh),
        }),
    ))
}

/// List registered machines with their capacity and allocation.
#[utoipa::path(
    get,
    path = "/v1/machines",
    operation_id = "list_machines",
    tag = "machines",
    responses(
        (status = 200, description = "The machines", body = MachineList),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>) -> ApiResult<Json<MachineList>> {
    Ok(Json(MachineList {
        machines: state.store.list_machines().await?,
    }))
}

/// A borglet asks to be synced now (a task exited). Its machine's poll loop wakes at
/// once, or right after the sync in flight; many nudges meanwhile make one sync.
#[utoipa::path(
    post,
    path = "/v1/machines/{name}/nudge",
    operation_id = "nudge_machine",
    tag = "machines",
    params(
        ("name" = String, Path, description = "The machine's name"),
        ("Authorization" = String, Header,
            description = "`Bearer <credential>`: the machine's credential"),
    ),
    responses(
        (status = 202, description = "The machine will be synced now"),
        (status = 401, description = "The credential is missing or not this machine's (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "No poll loop runs for a machine of that name (`not_found`)", body = ErrorBody),
    )
)]
async fn nudge(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let token = bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let outcome = match token {
        Some(token) => state.machines.nudge(&name, token),
        None => Nudge::Unauthorized,
    };
    metrics::counter!("borg_nudges_total", "result" => outcome.as_str()).increment(1);
    tracing::debug!(machine = %name, result = outcome.as_str(), "nudge");
    match outcome {
        Nudge::Accepted => Ok(StatusCode::ACCEPTED),
        Nudge::UnknownMachine => Err(ApiError::NotFound(format!(
            "no machine `{name}` is being polled"
        ))),
        Nudge::Unauthorized => Err(ApiError::Unauthorized(
            "a nudge needs `Authorization: Bearer <credential>` with the machine's credential"
                .into(),
        )),
    }
}

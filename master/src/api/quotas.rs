//! `/v1/quotas/{owner}`: how much cpu and memory an owner's live work may hold
//! per priority band. Over quota, work is accepted and waits (`pending`, with
//! the reason); it is never refused.

use super::{json_rejection, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use borg_shared::quota::{QuotaSpec, QuotaView};
use borg_shared::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_quota, put_quota))
}

/// An owner in a path.
#[allow(dead_code)] // read as a string by the handlers; here for the document
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct OwnerPath {
    /// The owner (a job spec's `owner`).
    #[param(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,63}$",
        min_length = 1,
        max_length = 63
    )]
    owner: String,
}

/// Owners are job owners: 1 to 63 characters, none of them a control character.
pub(super) fn validate_owner(owner: &str) -> ApiResult<()> {
    borg_shared::spec::bounds::check_owner(owner).map_err(|message| ApiError::Invalid {
        field: "owner".into(),
        message,
    })
}

/// An owner's quota per band and what its live attempts hold against it. An
/// owner without a quota reads as unlimited (no `limit`).
#[utoipa::path(
    get,
    path = "/v1/quotas/{owner}",
    operation_id = "get_quota",
    tag = "quotas",
    params(OwnerPath),
    responses(
        (status = 200, description = "The owner's quota and usage", body = QuotaView),
        (status = 422, description = "The owner is not a valid name (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn get_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(owner): Path<String>,
) -> ApiResult<Json<QuotaView>> {
    validate_owner(&owner)?;
    if !caller.may_read(&owner) {
        return Err(ApiError::Forbidden(format!(
            "token {} reads the quota of {} only",
            caller.token, caller.owner
        )));
    }
    Ok(Json(state.store.quota(&owner).await?))
}

/// Replace an owner's quota. A band left out, or a dimension left out of a
/// band, is unlimited. Work waiting for quota is judged again at once.
#[utoipa::path(
    put,
    path = "/v1/quotas/{owner}",
    operation_id = "put_quota",
    tag = "quotas",
    params(OwnerPath),
    request_body(content = QuotaSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "The quota as now set, with usage", body = QuotaView),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn put_quota(
    State(state): State<AppState>,
    Path(owner): Path<String>,
    body: Result<Json<QuotaSpec>, JsonRejection>,
) -> ApiResult<Json<QuotaView>> {
    validate_owner(&owner)?;
    let Json(spec) = body.map_err(json_rejection)?;
    // Columns are BIGINT: refuse what would not fit rather than wrap.
    for (band, limits) in [("production", &spec.production), ("batch", &spec.batch)] {
        let Some(l) = limits else { continue };
        let too_big = |v: u64| i64::try_from(v).is_err();
        if l.cpu.is_some_and(|c| too_big(c.0)) || l.memory.is_some_and(|m| too_big(m.0)) {
            return Err(ApiError::Invalid {
                field: band.into(),
                message: format!("the {band} limits are too large"),
            });
        }
    }
    state.store.set_quota(&owner, &spec).await?;
    Ok(Json(state.store.quota(&owner).await?))
}

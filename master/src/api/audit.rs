//! `GET /v1/audit`: the audit log of mutating calls, for admins, a page at a time.

use super::{ApiError, ApiResult, AppState};
use axum::extract::{Query, State};
use axum::Json;
use borg_shared::auth::AuditPage;
use borg_shared::ErrorBody;
use borg_store::{DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only entries with a higher id (the previous page's `next`).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Entries per page (default 100, at most 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Who did what, from where and when: every mutating call that succeeded or was
/// refused for its role (403), oldest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit_log",
    tag = "access",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        (status = 400, description = "The query string does not parse, e.g. a parameter given twice (`bad_request`)", body = ErrorBody),
        (status = 422, description = "`after` or `limit` is not a valid number or out of range (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let bad = |field: &str, v: &str| ApiError::Invalid {
        field: field.into(),
        message: format!("`{v}` is not a valid number"),
    };
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(v) => v.parse::<i64>().map_err(|_| bad("after", v))?,
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_AUDIT_PAGE,
        Some(v) => v.parse::<u32>().map_err(|_| bad("limit", v))?,
    };
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) || after < 0 {
        return Err(ApiError::Invalid {
            field: if after < 0 { "after" } else { "limit" }.into(),
            message: format!("`after` is 0 or more, `limit` between 1 and {MAX_AUDIT_PAGE}"),
        });
    }
    Ok(Json(state.store.audit_page(after, limit).await?))
}

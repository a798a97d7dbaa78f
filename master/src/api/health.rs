//! `/healthz`: up when Postgres answers.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

/// Health: `ok` when Postgres answers, `degraded` (503) while it does not (the
/// master keeps running and resumes by itself); `role` says whether this
/// replica leads.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The master and its database are up", body = Object,
            example = json!({"status": "ok", "role": "leader", "epoch": 3})),
        (status = 503, description = "Postgres does not answer; API calls answer 503 with Retry-After meanwhile", body = Object,
            example = json!({"status": "degraded", "reason": "database unreachable", "role": "follower"})),
    )
)]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut body = match state.leader.leading() {
        Some(epoch) => json!({"role": "leader", "epoch": epoch}),
        None => json!({"role": "follower"}),
    };
    if state.db.is_up() {
        body["status"] = json!("ok");
        (StatusCode::OK, Json(body))
    } else {
        body["status"] = json!("degraded");
        body["reason"] = json!("database unreachable");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

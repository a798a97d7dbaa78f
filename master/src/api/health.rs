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

/// Liveness: up when Postgres answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The master and its database are up", body = Object,
            example = json!({"status": "ok", "role": "leader", "epoch": 3})),
        (status = 503, description = "Postgres does not answer", body = Object,
            example = json!({"status": "unavailable", "reason": "database unreachable"})),
    )
)]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.ping().await {
        Ok(()) => {
            let role = match state.leader.leading() {
                Some(epoch) => json!({"status": "ok", "role": "leader", "epoch": epoch}),
                None => json!({"status": "ok", "role": "follower"}),
            };
            (StatusCode::OK, Json(role))
        }
        Err(e) => {
            tracing::warn!(error = %e, "health check: postgres unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "database unreachable"})),
            )
        }
    }
}

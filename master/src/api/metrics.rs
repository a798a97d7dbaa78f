//! `GET /metrics` in the Prometheus text format.

use super::{ApiResult, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use borg_shared::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics: the master's counters and histograms, plus gauges of jobs,
/// tasks and machines by state read from Postgres at scrape time.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The Prometheus text exposition format (empty when this process has no recorder)",
            body = String, content_type = "text/plain; version=0.0.4"),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let body = match &state.metrics {
        Some(handle) => crate::metrics::render(&state.store, handle).await?,
        None => String::new(),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

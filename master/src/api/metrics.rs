//! `GET /metrics` in the Prometheus text format.

use super::{ApiResult, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let body = match &state.metrics {
        Some(handle) => crate::metrics::render(&state.store, handle).await?,
        None => String::new(),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

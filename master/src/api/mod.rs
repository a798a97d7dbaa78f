//! The REST API: one router per resource, merged here.

mod error;
mod health;
mod jobs;
mod logs;
mod machines;
mod metrics;

pub use error::{ApiError, ApiResult};

use crate::store::Store;
use axum::extract::rejection::JsonRejection;
use axum::Router;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// One pooled client for proxying to borglets.
    pub http: reqwest::Client,
    /// Wakes the poller to rescan machines (a borglet registered).
    pub machines_changed: Arc<Notify>,
    /// The process's Prometheus recorder, if this process installed one.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(jobs::router())
        .merge(machines::router())
        .merge(logs::router())
        .merge(health::router())
        .merge(metrics::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Map axum's JSON body rejections onto our error body.
pub(crate) fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonDataError(e) => ApiError::Invalid {
            field: ".".into(),
            message: e.body_text(),
        },
        other => ApiError::Malformed {
            message: other.body_text(),
        },
    }
}

//! Answers that axum or a layer makes by itself (a path or query string that
//! does not parse, a panic) get our error body too, so every error a client
//! sees has the one documented shape, and no internal text.

use super::ApiError;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The most of a plain-text rejection kept as the message.
const MAX_MESSAGE: usize = 1024;

pub(super) async fn error_bodies(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), MAX_MESSAGE * 4)
        .await
        .unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(cut);
    }
    let err = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(or(message, "no such resource")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(or(message, "the body is too large")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => super::body::unsupported_media_type(),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid {
            field: ".".into(),
            message,
        },
        s if s.is_server_error() => {
            ApiError::Internal(anyhow::anyhow!("answered {s} without a body: {message}"))
        }
        _ => ApiError::BadRequest(or(message, "bad request")),
    };
    let mut out = err.into_response();
    if status.is_client_error() {
        *out.status_mut() = status;
    }
    out
}

fn or(message: String, default: &str) -> String {
    if message.is_empty() {
        default.to_string()
    } else {
        message
    }
}

/// A handler that panics answers 500 with our body; the panic is logged.
pub(super) fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    ApiError::Internal(anyhow::anyhow!("a handler panicked: {what}")).into_response()
}

//! The API's one error type. Each variant maps to a status and the
//! `{"error":{"code","message","field"}}` body; internal errors are logged
//! with their cause and reach the client as a bare 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use borg_shared::{ApiError as ErrorDetail, ErrorBody, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Malformed { message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A path or query string that does not parse.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but the token's role or owner does not allow this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadGateway(String),
    /// The path exists but not with this method (e.g. `DELETE /v1/jobs/{name}`).
    #[error("this endpoint does not take this method")]
    MethodNotAllowed,
    /// The body is larger than the master takes (`--max-body-bytes`).
    #[error("{0}")]
    TooLarge(String),
    /// The body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// This caller submits faster than `--submit-rate`: 429 with `Retry-After`.
    #[error("too many submissions from this caller; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// The store cannot be reached: 503 with `Retry-After`; safe to retry.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<borg_store::StoreError> for ApiError {
    fn from(e: borg_store::StoreError) -> Self {
        if store_unreachable(&e) {
            tracing::warn!(error = %e, "store unreachable");
            return ApiError::Unavailable(
                "the cell's store (Postgres) is unreachable; retry shortly".into(),
            );
        }
        ApiError::Internal(e.into())
    }
}

/// Errors that mean "Postgres is not there" rather than "this request is wrong":
/// no connection to be had, a connection that broke, or a server shutting down
/// or starting (SQLSTATE classes 08 and 57P).
fn store_unreachable(e: &borg_store::StoreError) -> bool {
    let borg_store::StoreError::Db(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Malformed { message } => ApiError::Malformed { message },
            SpecError::Invalid { field, message } => ApiError::Invalid { field, message },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::Malformed { .. } => (StatusCode::BAD_REQUEST, "malformed_json", None),
            ApiError::Invalid { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                Some(field.clone()),
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "borglet_unreachable", None),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None)
            }
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "internal error (logged on the master)".to_string()
            }
            ApiError::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                field,
            },
        };
        let retry_after = match &self {
            ApiError::Unavailable(_) => Some(crate::dbhealth::RETRY_AFTER_SECS),
            ApiError::TooManyRequests { retry_after } => Some(*retry_after),
            _ => None,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

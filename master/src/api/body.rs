//! Request bodies: only `application/json`, at most `--max-body-bytes` (axum's
//! `DefaultBodyLimit`, set in `router`), refused with our error body (415, 413).

use super::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};

/// The raw bytes of a JSON body, for handlers that parse it themselves (to name
/// the offending field): the content type is checked and the size bounded first.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        Ok(JsonBytes(bytes))
    }
}

/// `application/json` (with parameters such as `charset`), or `application/*+json`:
/// what axum's `Json` takes too.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub(crate) fn unsupported_media_type() -> ApiError {
    ApiError::UnsupportedMediaType(
        "the body must be JSON: send `Content-Type: application/json`".into(),
    )
}

/// A body that could not be read: too large (413), or cut off (400). The cause
/// stays in the master's log.
pub(crate) fn bytes_rejection(e: BytesRejection) -> ApiError {
    if let BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) = e {
        return too_large();
    }
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    tracing::debug!(error = %e.body_text(), "reading a request body");
    ApiError::Malformed {
        message: "the request body could not be read".into(),
    }
}

fn too_large() -> ApiError {
    ApiError::TooLarge(
        "the request body is larger than this master takes (its --max-body-bytes)".into(),
    )
}

//! The error body every REST endpoint answers with on failure:
//! `{"error":{"code","message","field"}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// Machine-readable, stable: `invalid_spec`, `malformed_json`, `not_found`, `conflict`, `internal`, ...
    pub code: String,
    /// One human sentence.
    pub message: String,
    /// The offending field's path (`task.resources.cpu`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
/// The body of every 4xx/5xx answer.
pub struct ErrorBody {
    pub error: ApiError,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({}: {})", self.message, self.code, field),
            None => write!(f, "{} ({})", self.message, self.code),
        }
    }
}

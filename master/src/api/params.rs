//! Parameters many routes share: a page of a list (`limit`, `after`), and the
//! names in paths (checked before they reach a query).

use super::{ApiError, ApiResult};
use crate::store::{DEFAULT_PAGE, MAX_PAGE};
use borg_shared::spec::bounds;
use serde::Deserialize;
use utoipa::IntoParams;

/// `limit` and `after` of a list.
#[derive(Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub after: Option<String>,
}

/// The page parameters of `GET /v1/jobs`, for the document.
#[allow(dead_code)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobPage {
    /// At most this many jobs (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Start after this: the previous page's `next`.
    #[param(
        pattern = r"^-?[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    after: Option<String>,
}

/// The page parameters of `GET /v1/machines`, for the document.
#[allow(dead_code)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MachinePage {
    /// At most this many machines (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Start after this machine name: the previous page's `next`.
    #[param(pattern = r"^[^\x00]*$", max_length = 253)]
    after: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> ApiResult<u32> {
        let limit = int_param("limit", self.limit.as_deref())?.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::Invalid {
                field: "limit".into(),
                message: format!("must be between 1 and {MAX_PAGE}"),
            });
        }
        Ok(limit)
    }

    /// `after`, if given: no row's key holds a NUL (nor could a query take one).
    pub fn after(&self) -> ApiResult<Option<&str>> {
        match self.after.as_deref() {
            None | Some("") => Ok(None),
            Some(a) if a.contains('\0') || a.chars().count() > 253 => Err(ApiError::Invalid {
                field: "after".into(),
                message: "not a page cursor: pass the previous page's `next`".into(),
            }),
            Some(a) => Ok(Some(a)),
        }
    }
}

/// An optional integer query parameter, or a 422 naming it.
pub fn int_param<T: std::str::FromStr>(field: &str, value: Option<&str>) -> ApiResult<Option<T>> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::Invalid {
            field: field.into(),
            message: format!("`{}` is not a valid number", v.escape_debug()),
        }),
    }
}

/// A job's name in a path (for the document; handlers read the path as a string).
#[allow(dead_code)]
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobName {
    /// The job's name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    pub name: String,
}

/// A machine's name in a path (for the document).
#[allow(dead_code)]
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MachineName {
    /// The machine's name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    pub name: String,
}

/// A name that no job or machine can have is not found (and never reaches a
/// query: a NUL would not even be valid text there).
pub fn known_name(kind: &str, name: &str) -> ApiResult<()> {
    if bounds::is_name(name) {
        return Ok(());
    }
    Err(ApiError::NotFound(format!(
        "no {kind} named `{}`",
        name.escape_debug()
    )))
}

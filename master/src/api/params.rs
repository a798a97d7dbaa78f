//! Parameters many routes share: a page of a list (`limit`, `after`), and the
//! names in paths (checked before they reach a query).

use super::{ApiError, ApiResult};
use crate::store::{DEFAULT_PAGE, MAX_PAGE};
use borg_shared::spec::{bounds, schema};
use serde::Deserialize;
use utoipa::IntoParams;

/// `limit` and `after` of a list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many (default 100, at most 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Start after this: the previous page's `next`.
    #[param(value_type = Option<String>, max_length = 128)]
    pub after: Option<String>,
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

    pub fn after(&self) -> Option<&str> {
        self.after.as_deref().filter(|a| !a.is_empty())
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
    #[param(schema_with = schema::name)]
    pub name: String,
}

/// A machine's name in a path (for the document).
#[allow(dead_code)]
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MachineName {
    /// The machine's name.
    #[param(schema_with = schema::name)]
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

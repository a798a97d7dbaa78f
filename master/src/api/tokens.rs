//! `/v1/tokens`: admins make, list and revoke API tokens. A token's secret is
//! in the answer that makes it and nowhere else: the store keeps its hash.

use super::quotas::validate_owner;
use super::{json_rejection, ApiError, ApiResult, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use borg_shared::auth::{
    hash_secret, new_secret, validate_token_name, CreateToken, CreatedToken, TokenList, TokenView,
};
use borg_shared::ErrorBody;
use borg_store::{CreateTokenOutcome, RevokeOutcome};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A token's name in a path (for the document; the handler reads a string).
#[allow(dead_code)]
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenName {
    /// The token's name.
    #[param(
        pattern = "^[a-z0-9][a-z0-9._-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    token: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
}

/// Make a token. Its secret is in this answer only: keep it.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "create_token",
    tag = "access",
    request_body(content = CreateToken, content_type = "application/json"),
    responses(
        (status = 201, description = "The token, with its secret (shown this once)", body = CreatedToken),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 409, description = "A token of that name exists, perhaps revoked: names are not reused (`conflict`)", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let Json(req) = body.map_err(json_rejection)?;
    validate_token_name(&req.name).map_err(|message| ApiError::Invalid {
        field: "name".into(),
        message,
    })?;
    validate_owner(&req.owner)?;
    let secret = new_secret().map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    match state
        .store
        .create_token(&req.name, &req.owner, req.role, &hash_secret(&secret))
        .await?
    {
        CreateTokenOutcome::Created(token) => {
            Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
        }
        CreateTokenOutcome::NameTaken => Err(ApiError::Conflict(format!(
            "a token named {} exists (names are not reused, even revoked ones)",
            req.name
        ))),
    }
}

/// Every token, revoked ones too: names, owners, roles and dates, never secrets.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "list_tokens",
    tag = "access",
    responses(
        (status = 200, description = "The tokens, oldest first", body = TokenList),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList {
        tokens: state.store.list_tokens().await?,
    }))
}

/// Revoke a token: every call with it fails from now on (the name stays taken).
#[utoipa::path(
    delete,
    path = "/v1/tokens/{token}",
    operation_id = "revoke_token",
    tag = "access",
    params(TokenName),
    responses(
        (status = 200, description = "The token, now revoked", body = TokenView),
        (status = 404, description = "No token has this name (`not_found`)", body = ErrorBody),
        (status = 409, description = "The token was already revoked (`conflict`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<TokenView>> {
    // A name no token can have never reaches a query.
    if validate_token_name(&name).is_err() {
        return Err(ApiError::NotFound(format!(
            "no token named `{}`",
            name.escape_debug()
        )));
    }
    match state.store.revoke_token(&name).await? {
        RevokeOutcome::Revoked(token) => Ok(Json(token)),
        RevokeOutcome::AlreadyRevoked(token) => Err(ApiError::Conflict(format!(
            "token {name} was already revoked{}",
            token
                .revoked_at
                .map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        ))),
        RevokeOutcome::NotFound => Err(ApiError::NotFound(format!("no token named {name}"))),
    }
}

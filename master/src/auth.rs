//! Who is calling, and may they. Every API route but the public ones (health,
//! metrics, the OpenAPI document, the dashboard page, and the borglet-facing
//! registration and nudge) needs `Authorization: Bearer <token>`; the token is
//! looked up by its hash on every request (one index probe), so a revoked token
//! fails on its very next call on every replica. Which role a route needs is
//! one table (`policy`), so a route left out of it is admin-only rather than
//! open. Owner scoping (a user sees only its own jobs) is the handlers' part,
//! through [`Caller`]. Every mutating call that succeeds or is refused for its
//! role is written to the audit log.

use crate::api::{ApiError, AppState};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestPartsExt;
use borg_shared::auth::{hash_secret, Role};
use borg_store::{Bootstrap, Store};
use std::net::SocketAddr;
use std::path::PathBuf;

/// How the master authenticates, from its flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthConfig {
    /// Run without authentication: every caller is an admin. For a dev box
    /// only; a warning says so at every start.
    #[arg(long, env = "BORG_INSECURE")]
    pub insecure: bool,
    /// A file holding an admin token's secret, stored (hashed) as the admin
    /// token `bootstrap` unless a token of that name exists. Also read from
    /// the environment as BORG_BOOTSTRAP_TOKEN (the secret itself; never argv).
    #[arg(long, env = "BORG_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The bootstrap secret itself: from BORG_BOOTSTRAP_TOKEN only (see `run_cli`).
    #[arg(skip)]
    pub bootstrap_token: Option<String>,
}

impl AuthConfig {
    /// The bootstrap secret, from the file or the environment, if given.
    fn bootstrap_secret(&self) -> anyhow::Result<Option<String>> {
        let secret = match (&self.bootstrap_token_file, &self.bootstrap_token) {
            (Some(file), _) => std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!("reading the bootstrap token file {}: {e}", file.display())
            })?,
            (None, Some(secret)) => secret.clone(),
            (None, None) => return Ok(None),
        };
        let secret = secret.trim().to_string();
        if secret.len() < 16 {
            anyhow::bail!("the bootstrap token is shorter than 16 characters: use a random secret");
        }
        Ok(Some(secret))
    }
}

/// At start: warn when open; else store the bootstrap token if one is given,
/// and refuse to start with no live admin token.
pub async fn prepare(store: &Store, config: &AuthConfig) -> anyhow::Result<()> {
    if config.insecure {
        tracing::warn!(
            "running INSECURE (--insecure / BORG_INSECURE): no authentication, every caller is an admin"
        );
        return Ok(());
    }
    if let Some(secret) = config.bootstrap_secret()? {
        match store.ensure_bootstrap_token(&hash_secret(&secret)).await? {
            Bootstrap::Inserted | Bootstrap::Present => {}
            Bootstrap::Other { revoked } => tracing::warn!(
                revoked,
                "the bootstrap token given is not the stored token `bootstrap` (or that one was revoked): it is not used"
            ),
        }
    }
    if !store.has_live_admin().await? {
        anyhow::bail!(
            "no live admin token in the database: start with --bootstrap-token-file FILE \
             (or BORG_BOOTSTRAP_TOKEN) to make one, or with --insecure to run without authentication"
        );
    }
    Ok(())
}

/// The authenticated caller of a request, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`insecure` when the master runs open).
    pub token: String,
    pub owner: String,
    pub role: Role,
}

impl Caller {
    fn insecure() -> Caller {
        Caller {
            token: "insecure".into(),
            owner: borg_store::BOOTSTRAP_OWNER.into(),
            role: Role::Admin,
        }
    }

    /// Operators and admins read every owner's jobs.
    pub fn reads_all(&self) -> bool {
        self.role >= Role::Operator
    }

    /// The owner a list is limited to: the caller's own, unless it reads all.
    pub fn list_scope(&self) -> Option<String> {
        (!self.reads_all()).then(|| self.owner.clone())
    }

    /// Who the caller is, as event reasons name it: `OWNER (token NAME)`.
    pub fn who(&self) -> String {
        format!("{} (token {})", self.owner, self.token)
    }

    /// Whether the caller may read what `owner` owns.
    pub fn may_read(&self, owner: &str) -> bool {
        self.reads_all() || self.owner == owner
    }

    /// Whether the caller may change what `owner` owns (admins: anyone's).
    pub fn may_change(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.owner == owner
    }

    /// The job `name` stands for, if the caller may read it; another owner's
    /// job answers as if it did not exist. With `change`, a job the caller may
    /// read but not change (an operator's view of another's) is 403.
    /// Answers the job's owner.
    pub async fn job(&self, store: &Store, name: &str, change: bool) -> Result<String, ApiError> {
        let owner = store.job_owner(name).await?;
        match owner {
            Some(owner) if self.may_read(&owner) => {
                if change && !self.may_change(&owner) {
                    return Err(ApiError::Forbidden(format!(
                        "job {name} is {owner}'s: a {} may read it, not change it",
                        self.role
                    )));
                }
                Ok(owner)
            }
            _ => Err(ApiError::NotFound(format!("no job named {name}"))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("this call needs a token".into()))
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (operations, the dashboard page, the borglets' own calls).
    Public,
    /// Any valid token; the handler limits a user to its own owner's jobs.
    Token,
    /// An operator or an admin.
    Operator,
    Admin,
}

/// What each route (method and path template) needs. Not listed: admin only.
pub fn policy(method: &Method, path: &str) -> Access {
    use Access::*;
    // A HEAD is answered by the GET route.
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    match (method, path) {
        ("GET", "/" | "/docs" | "/healthz" | "/metrics" | "/openapi.json") => Public,
        // The borglets' calls: they have their own credentials (nudge) or none yet.
        ("POST", "/v1/machines" | "/v1/machines/{name}/nudge") => Public,
        ("GET", "/v1/machines") => Token,
        ("POST", "/v1/machines/{name}/drain" | "/v1/machines/{name}/uncordon") => Operator,
        ("POST", "/v1/machines/{name}/cordon") => Operator,
        ("GET" | "POST", "/v1/jobs") | ("POST", "/v1/plan") => Token,
        ("GET", "/v1/jobs/{name}" | "/v1/jobs/{name}/tasks/{index}/logs") => Token,
        ("POST", "/v1/jobs/{name}/kill" | "/v1/jobs/{name}/scale") => Token,
        ("PUT", "/v1/jobs/{name}") | ("GET", "/v1/jobs/{name}/rollout") => Token,
        (
            "POST",
            "/v1/jobs/{name}/rollout/pause"
            | "/v1/jobs/{name}/rollout/resume"
            | "/v1/jobs/{name}/rollout/undo",
        ) => Token,
        ("GET", "/v1/resolve/{job}" | "/v1/events" | "/v1/quotas/{owner}") => Token,
        _ => Admin,
    }
}

fn allows(access: Access, role: Role) -> bool {
    match access {
        Access::Public | Access::Token => true,
        Access::Operator => role >= Role::Operator,
        Access::Admin => role == Role::Admin,
    }
}

/// What a handler says its call acted on, for the audit log (when the path
/// does not say it, as `POST /v1/jobs`).
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The route layer: authenticate, check the route's role, run, audit.
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(template) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let access = policy(&method, &template);
    if access == Access::Public {
        return next.run(req).await;
    }
    let caller = if state.insecure {
        Caller::insecure()
    } else {
        // The secret is read before any await: a request is not `Sync`.
        let secret = match presented_secret(&req) {
            Ok(secret) => secret,
            Err(e) => return e.into_response(),
        };
        match identify(&state.store, &secret).await {
            Ok(caller) => caller,
            Err(e) => return e.into_response(),
        }
    };
    let path = req.uri().path().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.to_string());
    let (mut parts, body) = req.into_parts();
    let params = parts.extract::<RawPathParams>().await.ok().map(|p| {
        p.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut req = Request::from_parts(parts, body);
    let resp = if allows(access, caller.role) {
        req.extensions_mut().insert(caller.clone());
        next.run(req).await
    } else {
        ApiError::Forbidden(format!(
            "{method} {template} needs the {} role; token {} is {}",
            match access {
                Access::Operator => "operator",
                _ => "admin",
            },
            caller.token,
            caller.role
        ))
        .into_response()
    };
    // A dry run is a POST that changes nothing: not in the audit log.
    let mutating = matches!(
        method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) && template != "/v1/plan";
    let status = resp.status();
    if mutating && (status.is_success() || status == StatusCode::FORBIDDEN) {
        let target = resp
            .extensions()
            .get::<AuditTarget>()
            .map(|t| t.0.clone())
            .or(params.filter(|p| !p.is_empty()));
        let record = borg_store::AuditRecord {
            token: &caller.token,
            owner: &caller.owner,
            role: caller.role,
            method: method.as_str(),
            path: &path,
            target: target.as_deref(),
            status: status.as_u16(),
            peer: peer.as_deref(),
        };
        if let Err(e) = state.store.record_audit(&record).await {
            tracing::error!(error = %e, token = %caller.token, %method, %path, "writing the audit log failed");
        }
    }
    resp
}

/// The secret a request presents. `GET /v1/events` also takes it as
/// `?access_token=` (a browser's `EventSource` cannot send headers).
fn presented_secret(req: &Request) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header is not `Bearer <token>`".into(),
                    )
                })
        })
        .transpose()?;
    let from_query = || {
        (req.uri().path() == "/v1/events")
            .then(|| access_token(req.uri().query()?))
            .flatten()
    };
    header.map(str::to_string).or_else(from_query).ok_or_else(|| {
        ApiError::Unauthorized(
            "this call needs `Authorization: Bearer <token>` (jobctl: --token, BORG_TOKEN or ~/.config/borg/token)"
                .into(),
        )
    })
}

/// The live token a secret is, as a caller.
async fn identify(store: &Store, secret: &str) -> Result<Caller, ApiError> {
    match store.token_by_hash(&hash_secret(secret)).await? {
        Some(t) => Ok(Caller {
            token: t.name,
            owner: t.owner,
            role: t.role,
        }),
        None => Err(ApiError::Unauthorized(
            "the token is not valid: unknown or revoked".into(),
        )),
    }
}

/// The `access_token` query parameter, decoded.
fn access_token(query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = query_pairs(query);
    pairs
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_not_in_the_table_are_admin_only() {
        assert_eq!(policy(&Method::GET, "/v1/tokens"), Access::Admin);
        assert_eq!(policy(&Method::PUT, "/v1/quotas/{owner}"), Access::Admin);
        assert_eq!(policy(&Method::GET, "/v1/something-new"), Access::Admin);
        assert_eq!(policy(&Method::POST, "/v1/machines"), Access::Public);
        assert_eq!(
            policy(&Method::POST, "/v1/machines/{name}/drain"),
            Access::Operator
        );
        assert!(allows(Access::Operator, Role::Admin));
        assert!(!allows(Access::Operator, Role::User));
        assert!(!allows(Access::Admin, Role::Operator));
    }

    #[test]
    fn the_query_token_is_decoded() {
        assert_eq!(
            access_token("after=0-0&access_token=a%2Bb").as_deref(),
            Some("a+b")
        );
        assert_eq!(access_token("access_token="), None);
        assert_eq!(access_token("x=1"), None);
    }
}

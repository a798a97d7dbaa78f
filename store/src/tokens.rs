//! API tokens: made, looked up by the hash of their secret (once per request,
//! one index probe: the database is the truth, so a revoked token fails on its
//! very next call on every master replica), listed and revoked.

use crate::{is_unique_violation, Store};
use borg_shared::auth::{Role, TokenView};
use chrono::{DateTime, Utc};

/// A live token's identity, as a request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub name: String,
    pub owner: String,
    pub role: Role,
}

pub enum CreateTokenOutcome {
    Created(TokenView),
    /// A token of that name exists (perhaps revoked): names are never reused.
    NameTaken,
}

pub enum RevokeOutcome {
    Revoked(TokenView),
    AlreadyRevoked(TokenView),
    NotFound,
}

/// What a master's bootstrap token came to at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Stored now as the admin token `bootstrap`.
    Inserted,
    /// The token `bootstrap` is this secret and live.
    Present,
    /// A token named `bootstrap` exists with another secret, or was revoked:
    /// left alone (revoke is final; make another admin token instead).
    Other { revoked: bool },
}

/// The name the bootstrap token is stored under.
pub const BOOTSTRAP_TOKEN: &str = "bootstrap";
/// Whose jobs the bootstrap token submits when a spec names no owner: the
/// spec's own default owner, so a dev cell behaves as before tokens.
pub const BOOTSTRAP_OWNER: &str = "default";

#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    owner: String,
    role: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_view(self) -> crate::Result<TokenView> {
        Ok(TokenView {
            role: parse_role(&self.role)?,
            name: self.name,
            owner: self.owner,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

fn parse_role(role: &str) -> crate::Result<Role> {
    role.parse()
        .map_err(|e: String| crate::StoreError::Corrupt(format!("api_tokens.role: {e}")))
}

const COLUMNS: &str = "name, owner, role, created_at, revoked_at";

impl Store {
    /// Store a new token (its secret's hash, never the secret).
    pub async fn create_token(
        &self,
        name: &str,
        owner: &str,
        role: Role,
        hash: &[u8],
    ) -> crate::Result<CreateTokenOutcome> {
        let res: Result<Row, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO api_tokens (name, owner, role, hash) VALUES ($1, $2, $3, $4)
             RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(owner)
        .bind(role.as_str())
        .bind(hash)
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(row) => {
                tracing::info!(token = name, owner, role = %role, "api token created");
                Ok(CreateTokenOutcome::Created(row.into_view()?))
            }
            Err(e) if is_unique_violation(&e, "api_tokens_pkey") => {
                Ok(CreateTokenOutcome::NameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The live token whose secret hashes to `hash`, if any.
    pub async fn token_by_hash(&self, hash: &[u8]) -> crate::Result<Option<TokenIdentity>> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT name, owner, role FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(name, owner, role)| {
            Ok(TokenIdentity {
                role: parse_role(&role)?,
                name,
                owner,
            })
        })
        .transpose()
    }

    /// Every token, revoked ones too, oldest first.
    pub async fn list_tokens(&self) -> crate::Result<Vec<TokenView>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Row::into_view).collect()
    }

    /// Revoke a token: refused from its next call on.
    pub async fn revoke_token(&self, name: &str) -> crate::Result<RevokeOutcome> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL
             RETURNING {COLUMNS}"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            tracing::info!(token = name, "api token revoked");
            return Ok(RevokeOutcome::Revoked(row.into_view()?));
        }
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_tokens WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(row) => RevokeOutcome::AlreadyRevoked(row.into_view()?),
            None => RevokeOutcome::NotFound,
        })
    }

    /// Whether any admin token is live.
    pub async fn has_live_admin(&self) -> crate::Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Store the bootstrap secret's hash as the admin token `bootstrap`,
    /// unless a token of that name exists (replicas starting at once race
    /// here; the insert is idempotent).
    pub async fn ensure_bootstrap_token(&self, hash: &[u8]) -> crate::Result<Bootstrap> {
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (name, owner, role, hash) VALUES ($1, $2, 'admin', $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(BOOTSTRAP_TOKEN)
        .bind(BOOTSTRAP_OWNER)
        .bind(hash)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            tracing::info!(token = BOOTSTRAP_TOKEN, "bootstrap admin token stored");
            return Ok(Bootstrap::Inserted);
        }
        let row: Option<(Vec<u8>, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT hash, revoked_at FROM api_tokens WHERE name = $1")
                .bind(BOOTSTRAP_TOKEN)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some((stored, None)) if stored == hash => Bootstrap::Present,
            Some((_, revoked)) => Bootstrap::Other {
                revoked: revoked.is_some(),
            },
            // Another token holds this secret's hash under another name.
            None => Bootstrap::Other { revoked: false },
        })
    }
}

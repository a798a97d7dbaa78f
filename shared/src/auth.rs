//! API identities: bearer tokens with a name, an owner and a role, and the
//! wire types of `/v1/tokens` and `/v1/audit`. A token's secret is shown once,
//! when it is made; only its SHA-256 is stored (the secret is 256 random bits,
//! so a fast hash is enough: there is nothing to guess by brute force).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do. Each role may do what the ones below it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submit, read and change the jobs of its own owner; read its own quota.
    User,
    /// A user, and: read everything; drain, cordon and uncordon machines.
    Operator,
    /// Everything: quotas, tokens, the audit log, any owner's jobs.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role (admin, operator or user)"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Secrets start with this, so one found in a file or a log is recognisable.
pub const SECRET_PREFIX: &str = "borg_";

/// A new secret: the prefix and 32 random bytes from the OS, in hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// What the store keeps of a secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.trim().as_bytes()).to_vec()
}

/// Token names: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a token name: 1 to 63 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
        ))
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Unique among all tokens, revoked ones included (the audit log names tokens).
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: String,
    /// Whose jobs the token submits and sees (1 to 63 characters, no control character).
    pub owner: String,
    pub role: Role,
}

/// A token as listed: never its secret nor its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub name: String,
    pub owner: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Set once revoked: the token is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// Send as `Authorization: Bearer <secret>`. Not stored; cannot be shown again.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// One audited call: a mutating request that succeeded or was refused (403).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub time: DateTime<Utc>,
    /// The token's name (`insecure` when the master runs without authentication).
    pub token: String,
    pub owner: String,
    pub role: Role,
    pub method: String,
    pub path: String,
    /// What the call acted on (`job=NAME`, `machine=NAME`, ...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub status: u16,
    /// The peer's address as the master saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// `GET /v1/audit`: oldest first; `next` is the `after` of the next page.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hash_stably() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_eq!(hash_secret(&a), hash_secret(&format!("{a}\n")));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(hash_secret(&a).len(), 32);
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::User);
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn token_names() {
        assert!(validate_token_name("ci-bot.1").is_ok());
        assert!(validate_token_name("").is_err());
        assert!(validate_token_name("Bad").is_err());
        assert!(validate_token_name("-x").is_err());
        assert!(validate_token_name(&"a".repeat(64)).is_err());
    }
}

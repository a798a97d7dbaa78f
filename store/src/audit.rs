//! The audit log: one row per mutating API call that succeeded or was
//! refused for its role (who, what, from where, when). Written after the call,
//! in its own statement; read by admins a page at a time by id.

use crate::Store;
use borg_shared::auth::{AuditEntry, AuditPage};
use chrono::{DateTime, Utc};

/// Entries per page, unless asked otherwise.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;
/// The most entries one page may hold.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// One call to record. Never a secret: the token's name, not its value.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub token: &'a str,
    pub owner: &'a str,
    pub role: borg_shared::auth::Role,
    pub method: &'a str,
    pub path: &'a str,
    pub target: Option<&'a str>,
    pub status: u16,
    pub peer: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    time: DateTime<Utc>,
    token: String,
    owner: String,
    role: String,
    method: String,
    path: String,
    target: Option<String>,
    status: i16,
    peer: Option<String>,
}

impl Store {
    pub async fn record_audit(&self, r: &AuditRecord<'_>) -> crate::Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (token, owner, role, method, path, target, status, peer)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.token)
        .bind(r.owner)
        .bind(r.role.as_str())
        .bind(r.method)
        .bind(r.path)
        .bind(r.target)
        .bind(r.status as i16)
        .bind(r.peer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Up to `limit` entries with an id above `after`, oldest first.
    pub async fn audit_page(&self, after: i64, limit: u32) -> crate::Result<AuditPage> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut rows: Vec<Row> = sqlx::query_as(
            "SELECT id, time, token, owner, role, method, path, target, status, peer
             FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = more.then(|| rows.last().map(|r| r.id)).flatten();
        let entries = rows
            .into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    role: r.role.parse().map_err(crate::StoreError::Corrupt)?,
                    id: r.id,
                    time: r.time,
                    token: r.token,
                    owner: r.owner,
                    method: r.method,
                    path: r.path,
                    target: r.target,
                    status: r.status.max(0) as u16,
                    peer: r.peer,
                })
            })
            .collect::<crate::Result<_>>()?;
        Ok(AuditPage { entries, next })
    }
}

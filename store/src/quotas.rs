//! Quotas per owner and band: setting and reading them, and what the owners'
//! live attempts hold against them (one aggregation, used by the API, the
//! scheduler's snapshot and the commit's re-check).

use crate::rows::capacity;
use crate::{live_attempt, Store, CHANNEL_PENDING};
use borg_shared::quota::{Band, BandUsage, Limits, QuotaSpec, QuotaView};
use borg_shared::wire::Capacity;
use borg_shared::{Bytes, MilliCpu};
use std::collections::HashMap;

/// A job's band, in SQL over `jobs j` (see `Band::of`).
#[macro_export]
macro_rules! band_of_job {
    () => {
        "(CASE WHEN j.priority >= 200 THEN 'production' ELSE 'batch' END)"
    };
}

/// Limits by (owner, band).
pub type QuotaTable = HashMap<(String, Band), Limits>;

/// Requests held by live attempts, by (owner, band).
pub type QuotaUsage = HashMap<(String, Band), Capacity>;

/// Every quota row (a small table: one row per owner and band that has one).
pub async fn read_quotas<'e, E: sqlx::PgExecutor<'e>>(db: E) -> crate::Result<QuotaTable> {
    let rows: Vec<(String, String, Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT owner, band, cpu_milli, memory FROM quotas")
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().filter_map(quota_row).collect())
}

pub(crate) fn quota_row(
    (owner, band, cpu, memory): (String, String, Option<i64>, Option<i64>),
) -> Option<((String, Band), Limits)> {
    let band = Band::parse(&band)?;
    let limits = Limits {
        cpu: cpu.map(|c| MilliCpu(c.max(0) as u64)),
        memory: memory.map(|m| Bytes(m.max(0) as u64)),
    };
    Some(((owner, band), limits))
}

/// What the live attempts of `owners`' jobs hold, by owner and band (an
/// attempt still stopping after its job ended counts until it is gone).
pub async fn quota_usage<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    owners: &[String],
) -> crate::Result<QuotaUsage> {
    if owners.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(concat!(
        "SELECT j.owner, ",
        band_of_job!(),
        ", COALESCE(sum(a.cpu_milli), 0)::bigint, COALESCE(sum(a.memory), 0)::bigint
         FROM jobs j
         JOIN tasks t ON t.job_id = j.id
         JOIN attempts a ON a.task_id = t.id AND a.state IN ",
        live_attempt!(),
        " WHERE j.owner = ANY($1) GROUP BY 1, 2"
    ))
    .bind(owners)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(owner, band, cpu, memory)| {
            Some(((owner, Band::parse(&band)?), capacity(cpu, memory, 0)))
        })
        .collect())
}

impl Store {
    /// Replace `owner`'s quota; waiting work is judged again at once.
    pub async fn set_quota(&self, owner: &str, spec: &QuotaSpec) -> crate::Result<()> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        sqlx::query("DELETE FROM quotas WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        for band in Band::ALL {
            let Some(limits) = spec.band(band).filter(|l| !l.is_unlimited()) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO quotas (owner, band, cpu_milli, memory) VALUES ($1, $2, $3, $4)",
            )
            .bind(owner)
            .bind(band.as_str())
            .bind(limits.cpu.map(|c| c.0 as i64))
            .bind(limits.memory.map(|m| m.0 as i64))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("SELECT pg_notify($1, 'quota')")
            .bind(CHANNEL_PENDING)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(owner, ?spec, "quota set");
        Ok(())
    }

    /// `owner`'s quota and what its live attempts hold, per band.
    pub async fn quota(&self, owner: &str) -> crate::Result<QuotaView> {
        let rows: Vec<(String, String, Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT owner, band, cpu_milli, memory FROM quotas WHERE owner = $1")
                .bind(owner)
                .fetch_all(&self.pool)
                .await?;
        let limits: QuotaTable = rows.into_iter().filter_map(quota_row).collect();
        let usage = quota_usage(&self.pool, &[owner.to_string()]).await?;
        let band = |band: Band| {
            let key = (owner.to_string(), band);
            BandUsage {
                limit: limits.get(&key).copied(),
                in_use: usage.get(&key).copied().unwrap_or_default(),
            }
        };
        Ok(QuotaView {
            owner: owner.to_string(),
            production: band(Band::Production),
            batch: band(Band::Batch),
        })
    }
}

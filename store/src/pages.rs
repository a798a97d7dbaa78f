//! Lists a page at a time: `limit` rows after a cursor, and the cursor of the
//! next page when there is one. Jobs go newest first (cursor: created_at and
//! id); machines by name (cursor: the name).

use crate::jobs::JOB_COLUMNS;
use crate::machines::{machine_usage, MACHINE_COLUMNS};
use crate::rows::{JobRow, MachineRow, COUNTS_JOIN};
use crate::{Result, Store};
use borg_shared::wire::{JobView, MachineView};
use borg_shared::{JobId, JobState, MachineId};
use chrono::{DateTime, Utc};

/// Rows per page, unless asked otherwise.
pub const DEFAULT_PAGE: u32 = 100;
/// The most rows one page may hold.
pub const MAX_PAGE: u32 = 1000;

/// One page and where the next starts (`None`: this was the last).
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// A place in the newest-first order of jobs, said as `MICROS_UUID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: JobId,
}

impl JobCursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_micros(), self.id)
    }

    pub fn decode(s: &str) -> Option<JobCursor> {
        let (micros, id) = s.split_once('_')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(JobCursor {
            created_at,
            id: id.parse().ok()?,
        })
    }
}

impl Store {
    /// A page of jobs, newest first, optionally in one state, optionally of
    /// one owner.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        owner: Option<&str>,
        after: Option<JobCursor>,
        limit: u32,
    ) -> Result<Page<JobView, JobCursor>> {
        let limit = limit.clamp(1, MAX_PAGE);
        // Spelled per case rather than `$1 IS NULL OR ...`, which no index serves.
        let by_state = if state.is_some() {
            "state = $1"
        } else {
            "$1::job_state IS NULL"
        };
        let after_cond = if after.is_some() {
            "(created_at, id) < ($2, $3)"
        } else {
            "$2::timestamptz IS NULL AND $3::uuid IS NULL"
        };
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM (
                 SELECT * FROM jobs WHERE {by_state} AND {after_cond}
                   AND ($5::text IS NULL OR owner = $5)
                 ORDER BY created_at DESC, id DESC LIMIT $4) j
             {COUNTS_JOIN} ORDER BY j.created_at DESC, j.id DESC"
        ))
        .bind(state)
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.id))
        .bind(i64::from(limit) + 1)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        let mut items: Vec<JobView> = rows.into_iter().map(JobRow::into_view).collect();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = more.then(|| items.last()).flatten().map(|j| JobCursor {
            created_at: j.created_at,
            id: j.id,
        });
        Ok(Page { items, next })
    }

    /// A page of machines by name, after the machine named `after`.
    pub async fn list_machines(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<MachineView, String>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut rows: Vec<MachineRow> = sqlx::query_as(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m
             WHERE $1::text IS NULL OR m.name > $1 ORDER BY m.name LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let ids: Vec<MachineId> = rows.iter().map(|r| r.id).collect();
        let usage = machine_usage(&self.pool, Some(&ids)).await?;
        let items: Vec<MachineView> = rows
            .into_iter()
            .map(|r| {
                let u = usage.get(&r.id).copied().unwrap_or_default();
                r.into_view(u)
            })
            .collect();
        let next = more.then(|| items.last().map(|m| m.name.clone())).flatten();
        Ok(Page { items, next })
    }
}

//! The event stream as the API serves it: events in their resumable order
//! (see `events.rs`) with the names a reader wants (job, task index, machine)
//! and optional filters, so a filtered history read stays in Postgres.

use crate::events::EventCursor;
use crate::Store;
use borg_shared::event_stream::{EventKind, StreamEvent};
use borg_shared::{AttemptId, JobId};
use chrono::{DateTime, Utc};

/// Which events a reader wants; `None` is "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub job: Option<String>,
    pub machine: Option<String>,
    pub kind: Option<EventKind>,
    /// Only events of this owner's jobs, and events of no job (machines).
    pub owner: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &StreamEvent) -> bool {
        self.job.as_ref().is_none_or(|j| e.job.as_ref() == Some(j))
            && self
                .machine
                .as_ref()
                .is_none_or(|m| e.machine.as_ref() == Some(m))
            && self.kind.is_none_or(|k| e.kind == k)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| e.job_id.is_none() || e.owner.as_ref() == Some(o))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    txid: i64,
    id: i64,
    time: DateTime<Utc>,
    kind: String,
    job: Option<String>,
    owner: Option<String>,
    job_id: Option<JobId>,
    task_index: Option<i32>,
    attempt_id: Option<AttemptId>,
    machine: Option<String>,
    from_state: Option<String>,
    to_state: String,
    reason: Option<String>,
}

/// A page of the stream: the events and where to resume.
#[derive(Debug, Default)]
pub struct FeedPage {
    pub events: Vec<StreamEvent>,
    /// The last event returned, or `after` when none was.
    pub next: EventCursor,
}

impl Store {
    /// Up to `limit` events after `after` that match `filter`, with names.
    pub async fn feed_after(
        &self,
        after: EventCursor,
        limit: u32,
        filter: &EventFilter,
    ) -> crate::Result<FeedPage> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT e.txid::text::bigint AS txid, e.id, e.time, e.kind::text AS kind,
                    j.name AS job, j.owner, e.job_id, t.index AS task_index, e.attempt_id,
                    m.name AS machine, e.from_state, e.to_state, e.reason
             FROM events e
             LEFT JOIN jobs j ON j.id = e.job_id
             LEFT JOIN tasks t ON t.id = e.task_id
             LEFT JOIN machines m ON m.id = e.machine_id
             WHERE (e.txid, e.id) > ($1::text::xid8, $2)
               AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
               AND ($4::text IS NULL OR e.job_id IN (SELECT id FROM jobs WHERE name = $4))
               AND ($5::text IS NULL OR e.machine_id IN (SELECT id FROM machines WHERE name = $5))
               AND ($6::text IS NULL OR e.kind::text = $6)
               AND ($7::text IS NULL OR e.job_id IS NULL
                    OR e.job_id IN (SELECT id FROM jobs WHERE owner = $7))
             ORDER BY e.txid, e.id
             LIMIT $3",
        )
        .bind(after.txid.to_string())
        .bind(after.id)
        .bind(i64::from(limit))
        .bind(filter.job.as_deref())
        .bind(filter.machine.as_deref())
        .bind(filter.kind.map(EventKind::as_str))
        .bind(filter.owner.as_deref())
        .fetch_all(&self.pool)
        .await?;
        let next = rows.last().map_or(after, |r| EventCursor {
            txid: r.txid,
            id: r.id,
        });
        let events = rows.into_iter().filter_map(to_event).collect();
        Ok(FeedPage { events, next })
    }

    /// The newest position a reader may start "live" from: every event at or
    /// before it is committed and readable, none after it is yet.
    pub async fn feed_head(&self) -> crate::Result<EventCursor> {
        let head: Option<(i64, i64)> = sqlx::query_as(
            "SELECT txid::text::bigint, id FROM events
             WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY txid DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            head.map_or(EventCursor::default(), |(txid, id)| EventCursor {
                txid,
                id,
            }),
        )
    }
}

impl Store {
    /// Whether the filter's job and machine exist (ever did): `(job, machine)`,
    /// each true when not asked for.
    pub async fn feed_subjects_exist(&self, filter: &EventFilter) -> crate::Result<(bool, bool)> {
        Ok(sqlx::query_as(
            "SELECT $1::text IS NULL
                    OR EXISTS (SELECT 1 FROM jobs WHERE name = $1 AND ($3::text IS NULL OR owner = $3)),
                    $2::text IS NULL OR EXISTS (SELECT 1 FROM machines WHERE name = $2)",
        )
        .bind(filter.job.as_deref())
        .bind(filter.machine.as_deref())
        .bind(filter.owner.as_deref())
        .fetch_one(&self.pool)
        .await?)
    }
}

fn to_event(r: Row) -> Option<StreamEvent> {
    let Ok(kind) = r.kind.parse() else {
        tracing::warn!(kind = %r.kind, id = r.id, "event of an unknown kind skipped");
        return None;
    };
    Some(StreamEvent {
        cursor: EventCursor {
            txid: r.txid,
            id: r.id,
        }
        .to_string(),
        id: r.id,
        time: r.time,
        kind,
        job: r.job,
        owner: r.owner,
        job_id: r.job_id,
        task_index: r.task_index,
        attempt: r.attempt_id,
        machine: r.machine,
        from: r.from_state,
        to: r.to_state,
        reason: r.reason,
    })
}

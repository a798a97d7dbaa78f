//! Reading the event log in an order that is safe to resume from.
//!
//! Event ids come from a sequence, so they are not commit-ordered: an event
//! with a smaller id may commit after one with a larger id, and a reader that
//! resumed "after id N" would skip it. Every event records its transaction id
//! instead; a reader returns only events of transactions older than the oldest
//! one still running (its snapshot's xmin, so all of them have finished), in
//! `(txid, id)` order, and resumes after the last `(txid, id)` it returned.
//! A long-running transaction holds the stream back; it never makes it skip.

use crate::Store;
use borg_shared::{AttemptId, JobId, MachineId, TaskId};
use chrono::{DateTime, Utc};
use std::fmt;
use std::str::FromStr;

/// Where a reader stands: the last event it has seen. Written `TXID-ID`
/// (what a client sends back as `Last-Event-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EventCursor {
    pub txid: i64,
    pub id: i64,
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.txid, self.id)
    }
}

impl FromStr for EventCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an event cursor (TXID-ID)");
        let (txid, id) = s.split_once('-').ok_or_else(bad)?;
        Ok(EventCursor {
            txid: txid.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One event of any kind, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub txid: i64,
    pub id: i64,
    pub time: DateTime<Utc>,
    /// `task`, `job` or `machine`.
    pub kind: String,
    pub job_id: Option<JobId>,
    pub task_id: Option<TaskId>,
    pub attempt_id: Option<AttemptId>,
    pub machine_id: Option<MachineId>,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub reason: Option<String>,
}

impl StoredEvent {
    pub fn cursor(&self) -> EventCursor {
        EventCursor {
            txid: self.txid,
            id: self.id,
        }
    }
}

#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Resume from here (unchanged when the page is empty).
    pub next: EventCursor,
}

impl Store {
    /// Up to `limit` events after `after`, in a resumable order.
    pub async fn events_after(&self, after: EventCursor, limit: u32) -> crate::Result<EventPage> {
        let events: Vec<StoredEvent> = sqlx::query_as(
            "SELECT txid::text::bigint AS txid, id, time, kind::text AS kind, job_id, task_id,
                    attempt_id, machine_id, from_state, to_state, reason
             FROM events
             WHERE (txid, id) > ($1::text::xid8, $2)
               AND txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY txid, id
             LIMIT $3",
        )
        .bind(after.txid.to_string())
        .bind(after.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let next = events.last().map_or(after, StoredEvent::cursor);
        Ok(EventPage { events, next })
    }
}

//! The wire format of `GET /v1/events`: one server-sent event per state change
//! of a task, job or machine. The SSE `id:` is `cursor`; a client resumes by
//! sending it back as `Last-Event-ID` (or `?after=`).

use crate::ids::{AttemptId, JobId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Task,
    Job,
    Machine,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Task, EventKind::Job, EventKind::Machine];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Task => "task",
            EventKind::Job => "job",
            EventKind::Machine => "machine",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not an event kind (task, job or machine)"))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change. `from` and `to` are states of the `kind`'s own machine
/// (task, job or machine states); `from` is absent on creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// Where this event stands in the stream (`TXID-ID`): resume after it.
    pub cursor: String,
    /// The event row's id (unique; not commit-ordered).
    pub id: i64,
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The job's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The job's id: a name is reused once a job is done, an id never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

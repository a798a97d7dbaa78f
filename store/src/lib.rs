//! The one owner of the cell's schema and of every state change.
//!
//! borgmaster and borgscheduler both write through this crate, and nothing else
//! writes a `state` column: every move of tasks, attempts, jobs and machines is
//! a set-based operation in the caller's transaction that checks the moves
//! against the state machine in `borg_shared`, updates all rows in one
//! statement conditionally on their current state, appends their events, and
//! hands back what actually moved so metrics and logs are emitted only after
//! the commit (`Transitions::emit`).

mod attempts;
mod audit;
mod desired;
mod drain;
mod enroll;
mod error;
mod event_feed;
mod events;
mod finish;
pub mod fixtures;
mod health;
mod history;
mod jobs;
mod lease;
mod lost;
mod machines;
mod moves;
mod pages;
mod placements;
mod preempt;
mod quotas;
mod reports;
mod resolve;
mod restarts;
pub mod rollout;
mod rows;
mod scale;
pub mod sql;
mod tasks;
mod tokens;
mod tx;

pub use audit::{AuditRecord, DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE};
pub use desired::DesiredSet;
pub use drain::{CordonOutcome, DEFAULT_MAX_UNAVAILABLE};
pub use enroll::{Admission, Enrolled, KnownMachine};
pub use error::{Result, StoreError};
pub use event_feed::{EventFilter, FeedPage};
pub use events::{EventCursor, EventPage, StoredEvent};
pub use health::TASK_HEALTHY_SQL;
pub use history::Collected;
pub use jobs::{KillOutcome, SubmitOutcome, TaskPage, DEFAULT_TASK_PAGE, MAX_TASK_PAGE};
pub use lease::LeaseView;
pub use lost::MachineDown;
pub use machines::{machine_usage, MachineTarget, Usage};
pub use moves::{Transitions, MOVE_TASKS};
pub use pages::{JobCursor, Page, DEFAULT_PAGE, MAX_PAGE};
pub use placements::{
    commit_stream, Committed, Placed, Placement, CLAIM_TASKS, KEYED_JOINS, REASON_REFRESH,
};
pub use preempt::{Preemption, PREEMPTED_BY};
pub use quotas::{quota_usage, read_quotas, QuotaTable, QuotaUsage};
pub use reports::ApplyOutcome;
pub use rollout::{ControlOutcome, UpdateOutcome, REPLACED_BY};
pub use scale::ScaleOutcome;
pub use tasks::TaskLocation;
pub use tokens::{
    Bootstrap, CreateTokenOutcome, RevokeOutcome, TokenIdentity, BOOTSTRAP_OWNER, BOOTSTRAP_TOKEN,
};
pub use tx::begin;

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

/// Channel the scheduler listens on: tasks became pending or capacity appeared.
pub const CHANNEL_PENDING: &str = "borg_pending";
/// Channel the master listens on: an attempt was placed on (or should stop on)
/// the machine whose id is the payload.
pub const CHANNEL_PLACED: &str = "borg_placed";

/// The schema, applied by the master at start and by the test harness.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A pool sized for the box: a few connections per core, since every
    /// statement is short and Postgres runs on the same cores.
    pub async fn connect(url: &str) -> Result<Store> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        let pool = PgPoolOptions::new()
            .max_connections((4 * cores).clamp(8, 32))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Store { pool })
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply migrations. sqlx takes an advisory lock, so two masters starting at
    /// once is safe. A migration that alters a table can deadlock with a
    /// scheduler reading it meanwhile (Postgres then aborts one of the two); each
    /// migration is its own transaction, so it is simply run again.
    pub async fn migrate(&self) -> Result<()> {
        let mut tries = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < MIGRATE_RETRIES && is_lock_conflict(&e) => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, "a migration lost a lock conflict; running it again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

const MIGRATE_RETRIES: u32 = 10;

/// A deadlock or a lock that could not be had: worth running again.
fn is_lock_conflict(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    let db = match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => e.as_database_error(),
        _ => None,
    };
    db.and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "55P03")
}

/// Is this error the violation of the named unique index/constraint?
pub(crate) fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}

/// Buckets (seconds) of the task latency histograms this crate records
/// (`borg_task_submit_to_placed_seconds` where placements are committed,
/// `borg_task_placed_to_running_seconds` where borglet reports are applied):
/// from 5 ms to 10 minutes.
pub const TASK_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

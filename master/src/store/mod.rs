//! All of the master's SQL. Every task state change happens here, in one
//! transaction with its event row; handlers and the poller only call in.

mod jobs;
mod machines;
mod reports;
mod rows;
mod tasks;
mod transitions;

pub use jobs::{KillOutcome, SubmitOutcome};
pub use reports::ApplyOutcome;
pub use tasks::TaskLocation;

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

/// Channel the scheduler listens on: tasks became pending or capacity appeared.
pub const CHANNEL_PENDING: &str = "borg_pending";
/// Channel the master listens on: an attempt was placed on (or should stop on) the machine named in the payload (its id).
pub const CHANNEL_PLACED: &str = "borg_placed";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply migrations. sqlx takes an advisory lock, so two masters starting at once is safe.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
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

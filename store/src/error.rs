//! The store's one error type.

use borg_shared::TaskState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A caller asked for a move the state machine forbids: a bug, never input.
    #[error("task {task} may not move from {from} to {to}")]
    IllegalMove {
        task: String,
        from: TaskState,
        to: TaskState,
    },
    /// A row that must exist did not (it changed under us): the caller may retry.
    #[error("{0}")]
    Vanished(String),
    /// A write made as leader at `epoch`, but another replica leads now.
    #[error("deposed: wrote as leader at epoch {epoch}, the lease is at epoch {current}")]
    Deposed { epoch: i64, current: i64 },
    /// A stored value this build cannot read (a role it does not know).
    #[error("unreadable row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

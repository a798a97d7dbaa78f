//! Where every transaction of the master and the scheduler begins.
//!
//! sqlx 0.8's `Pool::begin` is not safe to cancel: its `BEGIN` is sent before
//! the transaction is counted, so a future dropped while that round trip is in
//! flight (an HTTP handler whose client went away, a `select!` or `timeout`
//! around a store call) returns its connection to the pool inside an open
//! transaction that nothing will ever commit or roll back (upstream issue
//! 4393, fixed in 0.9). Every later statement on that connection then runs in
//! it: a write answered as done is lost when the connection closes, and after
//! the first error every statement fails with "current transaction is aborted".
//!
//! [`begin`] runs the `BEGIN` in a task of its own, so it always finishes: if
//! the caller is gone by then, the transaction is dropped there and rolled back
//! like any other. `clippy.toml` refuses `Pool::begin` everywhere else.

use sqlx::{PgPool, Postgres, Transaction};

/// `pool.begin()`, safe to cancel at any point.
#[allow(clippy::disallowed_methods)] // the one place that may call it
pub async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(tx) => tx,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime shuts down, which drops every task: nothing
        // runs after that to use the connection again.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

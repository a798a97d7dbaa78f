//! A transaction's `BEGIN` dropped while in flight, against a real Postgres.
//!
//! The caller's future (an HTTP handler whose client hung up, a `timeout`
//! around a store call) is dropped after Postgres ran the `BEGIN` and before
//! the caller heard back. The connection then goes back to the pool; the next
//! write through the pool must be committed, as every other write is.

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Whether a write through a one-connection pool, made after a `begin` of
/// that pool was dropped in flight, is seen by another connection.
async fn write_seen_after_a_begin_dropped_in_flight<F, Fut>(begin: F) -> bool
where
    F: Fn(PgPool) -> Fut,
    Fut: Future<Output = sqlx::Result<Transaction<'static, Postgres>>>,
{
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let other = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE writes (x int)")
        .execute(&other)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Poll the begin by hand, and drop it once Postgres shows its connection
    // inside the transaction while the future is still pending. A begin that
    // finishes first (its answer was read in the same poll) is tried again.
    // Each try starts from a connection out of any transaction (the one a
    // finished try dropped is rolled back when its connection is next used).
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = || async {
        assert!(Instant::now() < deadline, "never caught a BEGIN in flight");
        sqlx::query_scalar::<_, Option<String>>("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&other)
            .await
            .unwrap()
    };
    let mut cx = Context::from_waker(Waker::noop());
    'tries: loop {
        while state().await.as_deref() != Some("idle") {
            tokio::task::yield_now().await;
        }
        let mut begin = Box::pin(begin(pool.clone()));
        loop {
            if let Poll::Ready(tx) = begin.as_mut().poll(&mut cx) {
                drop(tx.expect("begin"));
                continue 'tries;
            }
            if state().await.as_deref() == Some("idle in transaction") {
                drop(begin);
                break 'tries;
            }
            tokio::task::yield_now().await;
        }
    }

    sqlx::query("INSERT INTO writes VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM writes")
        .fetch_one(&other)
        .await
        .unwrap();
    seen == 1
}

#[tokio::test]
async fn a_write_after_a_begin_dropped_in_flight_is_committed() {
    let seen =
        write_seen_after_a_begin_dropped_in_flight(
            |pool| async move { borg_store::begin(&pool).await },
        )
        .await;
    assert!(
        seen,
        "the write ran inside the dropped BEGIN's transaction and was never committed"
    );
}

/// The control: the hazard `borg_store::begin` exists for. When this fails,
/// sqlx cancels a `BEGIN` safely, and `borg_store::begin` and the rule in
/// `clippy.toml` can go.
#[tokio::test]
#[allow(clippy::disallowed_methods)]
async fn sqlx_pool_begin_dropped_in_flight_leaves_the_connection_in_its_transaction() {
    let seen =
        write_seen_after_a_begin_dropped_in_flight(|pool| async move { pool.begin().await }).await;
    assert!(!seen, "sqlx's own begin is now safe to drop in flight");
}

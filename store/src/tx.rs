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
//! [`begin`] runs sqlx's begin in the caller's task as before; dropped before
//! it is done, it hands the rest of it to a task of its own, where the
//! transaction is then dropped and rolled back like any other. `clippy.toml`
//! refuses `Pool::begin` everywhere else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use sqlx::{PgPool, Postgres, Transaction};

type Begin = Pin<Box<dyn Future<Output = sqlx::Result<Transaction<'static, Postgres>>> + Send>>;

/// `pool.begin()`, safe to cancel at any point.
#[allow(clippy::disallowed_methods)] // the one place that may call it
pub fn begin(pool: &PgPool) -> impl Future<Output = sqlx::Result<Transaction<'static, Postgres>>> {
    let pool = pool.clone();
    RunsToItsEnd(Some(Box::pin(async move { pool.begin().await })))
}

/// A begin that, dropped while pending, finishes in a task of its own.
struct RunsToItsEnd(Option<Begin>);

impl Future for RunsToItsEnd {
    type Output = sqlx::Result<Transaction<'static, Postgres>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(begin) = self.0.as_mut() else {
            panic!("polled after it was done");
        };
        let done = std::task::ready!(begin.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(done)
    }
}

impl Drop for RunsToItsEnd {
    fn drop(&mut self) {
        if let Some(begin) = self.0.take() {
            // Without a runtime (it is shutting down) nothing runs afterwards
            // to use the connection again.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    drop(begin.await);
                });
            }
        }
    }
}

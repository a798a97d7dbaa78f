//! The leadership lease: which master replica polls borglets and runs the
//! controllers. One row; each takeover increments the epoch. Writes made as
//! leader call [`check_epoch`] in their own transaction.

use crate::error::{Result, StoreError};
use crate::Store;
use std::time::Duration;

/// Who leads now, as one replica saw it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseView {
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds until the lease expires (negative: expired).
    pub expires_in_ms: i64,
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Store {
    /// Take the lease if nobody holds it or it expired; returns the new epoch.
    pub async fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<Option<i64>> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leader_lease (id, holder, epoch, acquired_at, expires_at)
             VALUES (1, $1, 1, now(), now() + make_interval(secs => $2 / 1000.0))
             ON CONFLICT (id) DO UPDATE
                 SET holder = EXCLUDED.holder, epoch = leader_lease.epoch + 1,
                     acquired_at = now(), expires_at = EXCLUDED.expires_at
                 WHERE leader_lease.expires_at < now()
             RETURNING epoch",
        )
        .bind(holder)
        .bind(millis(ttl) as f64)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(epoch) = epoch {
            tracing::info!(holder, epoch, "took the leader lease");
            metrics::counter!("borg_leader_takeovers_total").increment(1);
        }
        Ok(epoch)
    }

    /// Extend the lease held at `epoch`; false when another replica took it.
    pub async fn renew_lease(&self, holder: &str, epoch: i64, ttl: Duration) -> Result<bool> {
        let renewed = sqlx::query(
            "UPDATE leader_lease SET expires_at = now() + make_interval(secs => $3 / 1000.0)
             WHERE id = 1 AND holder = $1 AND epoch = $2",
        )
        .bind(holder)
        .bind(epoch)
        .bind(millis(ttl) as f64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Give the lease up (a clean shutdown): another replica takes it at once.
    pub async fn release_lease(&self, holder: &str, epoch: i64) -> Result<()> {
        sqlx::query(
            "UPDATE leader_lease SET expires_at = now() - interval '1 millisecond'
             WHERE id = 1 AND holder = $1 AND epoch = $2",
        )
        .bind(holder)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn lease(&self) -> Result<Option<LeaseView>> {
        Ok(sqlx::query_as(
            "SELECT holder, epoch,
                    (extract(epoch FROM expires_at - now()) * 1000)::bigint AS expires_in_ms
             FROM leader_lease WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// Fail with [`StoreError::Deposed`] unless `epoch` is the lease's epoch. The
/// lease row stays share-locked until the caller's transaction ends, so no
/// takeover commits between this check and the caller's commit. Call it inside
/// a transaction: it also sets the transaction-local `borg.epoch`, which every
/// event row the transaction inserts records (`events.epoch`).
///
/// A leader paused or cut off inside such a transaction must not hold the lock
/// past its lease, or the replica taking over would wait for it forever (a
/// stopped client never ends its transaction). So the transaction also gets
/// an `idle_in_transaction_session_timeout` of the lease's remaining time plus
/// a second: Postgres ends the session of a leader that stalls that long, its
/// locks go, and the takeover proceeds; the old leader finds its connection
/// gone and, on retrying, that it is deposed.
pub(crate) async fn check_epoch(conn: &mut sqlx::PgConnection, epoch: i64) -> Result<()> {
    let current: Option<(i64, String)> = sqlx::query_as(
        "SELECT epoch,
                set_config('idle_in_transaction_session_timeout',
                           (1000 + GREATEST(0, extract(epoch FROM expires_at - now()) * 1000))::bigint::text,
                           true)
         FROM leader_lease, set_config('borg.epoch', $1::text, true)
         WHERE id = 1 FOR SHARE OF leader_lease",
    )
    .bind(epoch)
    .fetch_optional(&mut *conn)
    .await?;
    match current.map(|(c, _)| c) {
        Some(c) if c == epoch => Ok(()),
        current => Err(StoreError::Deposed {
            epoch,
            current: current.unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A leader stopped (SIGSTOP) inside a checked write holds the lease row's
    /// share lock; the replica taking over must not wait for it past the lease.
    #[tokio::test]
    async fn a_leader_stalled_inside_a_checked_write_does_not_block_the_takeover() {
        let url = devpg::testing::fresh_database(&crate::MIGRATOR)
            .await
            .expect("a fresh database");
        let store = Store::from_pool(sqlx::PgPool::connect(&url).await.unwrap());
        let ttl = Duration::from_millis(300);
        let epoch = store.acquire_lease("old", ttl).await.unwrap().unwrap();

        // The old leader: inside a transaction, checked, then it stops talking.
        let mut stalled = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut stalled).await.unwrap();
        check_epoch(&mut stalled, epoch).await.unwrap();

        // The new one takes the lease once it expired, without waiting on the lock.
        let taken = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(e) = store.acquire_lease("new", ttl).await.unwrap() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the takeover waited on the stalled leader's lock");
        assert_eq!(taken, epoch + 1);
        // The stalled leader's session was ended for it.
        assert!(sqlx::query("SELECT 1").execute(&mut stalled).await.is_err());
    }
}

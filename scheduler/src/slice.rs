//! Several schedulers split the pending queue instead of racing for it. Each
//! holds one Postgres advisory lock of the `SLICE_CLASS` family on a
//! connection of its own (a member slot); at the start of a pass it counts the
//! slots held, and takes the jobs whose part (the job id's hash modulo 64,
//! kept on each queue row: migration 0025) modulo that count is its rank. A
//! scheduler that dies loses its session and so its slot: at their next pass
//! the others count one fewer and cover its jobs. While membership changes
//! two schedulers may briefly judge the same job (the commit stays safe) or
//! skip one for a pass.

use sqlx::{Connection, PgConnection};

/// First key of the advisory locks (the second is the slot): "borg" in ASCII.
const SLICE_CLASS: i32 = 0x626f_7267;
/// More schedulers than this share slots' work by racing as before.
const SLOTS: i32 = 64;

/// This scheduler's share of the queue: the rows whose part (their job's hash
/// modulo 64) modulo `of` is `rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub rank: i32,
    pub of: i32,
}

impl Slice {
    pub const ALL: Slice = Slice { rank: 0, of: 1 };

    /// The machines this scheduler fills first: those whose id hashes to its
    /// rank, so schedulers sharing a cell pack different machines and their
    /// commits seldom meet on one. Every machine is home to the whole queue.
    pub fn is_home(&self, machine: borg_shared::MachineId) -> bool {
        self.of <= 1
            || crate::score::tie_break(machine.0, uuid::Uuid::nil()) % self.of as u64
                == self.rank as u64
    }
}

impl Default for Slice {
    fn default() -> Self {
        Slice::ALL
    }
}

#[derive(Default)]
pub struct Membership {
    conn: Option<PgConnection>,
    slot: Option<i32>,
}

impl Membership {
    /// The slice for this pass; the whole queue if the membership cannot be read.
    pub async fn slice(&mut self, url: &str) -> Slice {
        match self.try_slice(url).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "cannot read the schedulers' membership, taking the whole queue: {e}"
                );
                self.conn = None;
                self.slot = None;
                Slice::ALL
            }
        }
    }

    async fn try_slice(&mut self, url: &str) -> Result<Slice, sqlx::Error> {
        if self.conn.is_none() {
            self.slot = None;
            self.conn = Some(PgConnection::connect(url).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        if self.slot.is_none() {
            for slot in 0..SLOTS {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(SLICE_CLASS)
                    .bind(slot)
                    .fetch_one(&mut *conn)
                    .await?;
                if got {
                    self.slot = Some(slot);
                    break;
                }
            }
        }
        let Some(mine) = self.slot else {
            return Ok(Slice::ALL);
        };
        let held: Vec<i32> = sqlx::query_scalar(
            "SELECT objid::integer FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objsubid = 2
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY objid",
        )
        .bind(SLICE_CLASS as u32 as i64)
        .fetch_all(&mut *conn)
        .await?;
        let rank = held.iter().position(|&s| s == mine).unwrap_or(0);
        Ok(Slice {
            rank: rank as i32,
            of: held.len().max(1) as i32,
        })
    }
}

//! The machines a scheduler places on, kept in memory from pass to pass and
//! brought up to date from what changed since the last read, instead of
//! reading every machine and summing every live attempt each pass.
//!
//! What changed is found by transaction: every change of a machine's state,
//! name, labels, capacity or ports stamps `machines.sched_txid`
//! (migration 0018), and every change of an attempt's state (what a
//! machine's usage sums) writes an event naming its machine, stamped with its
//! transaction (`events.txid`), except the end of an attempt that is no longer
//! its task's (a surge's superseded copy, a stale copy on a machine that came
//! back), which stamps its machine's `sched_txid` instead (store/src/reports.rs).
//! Each read records the xmin of its snapshot:
//! every transaction below it had finished and was seen by that read, so the
//! next read only looks at rows stamped at or above it (a transaction that
//! commits late is never skipped; one seen already is merely read again).
//! The machines it names are read again whole (row and usage), so a delta is
//! never applied twice. Everything is read again after `FULL_EVERY`, when more
//! than a quarter of the machines changed (or more events than that were
//! written since the last read), or after a failed pass.
//!
//! Postgres stays the truth: the commit re-checks capacity under the
//! machines' row locks, so a stale cache can cost a lost race, never an
//! over-commit.

use crate::snapshot::{read_machines, read_machines_in, Snapshot};
use anyhow::Context;
use borg_shared::MachineId;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Read every machine again at least this often, whatever the cursor says.
pub const FULL_EVERY: Duration = Duration::from_secs(60);

/// What one refresh read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Machine rows read (each with its usage).
    pub rows: u64,
    /// Whether every machine was read.
    pub full: bool,
}

#[derive(Debug, Default)]
pub struct MachineCache {
    /// The `up` machines, by name; the pass adds its own per-page fields.
    pub snapshot: Snapshot,
    /// Position of each machine in `snapshot.machines`.
    pub index: HashMap<MachineId, usize>,
    /// xmin (an `xid8`, as text) of the last read's snapshot; `None`: read all.
    cursor: Option<String>,
    last_full: Option<Instant>,
    /// Below this many machines every refresh reads them all, with no cursor:
    /// one query, cheaper than the change queries it would take instead.
    small: usize,
}

impl MachineCache {
    /// A cache that keeps the machines between passes once there are at least
    /// `above` of them (0: always).
    pub fn new(above: usize) -> MachineCache {
        MachineCache {
            small: above,
            ..MachineCache::default()
        }
    }

    /// Read everything at the next refresh.
    pub fn invalidate(&mut self) {
        self.cursor = None;
    }

    /// Bring the machines up to date. The pass's own fields of the snapshot
    /// (where spread jobs run) are dropped: they are read again as needed.
    pub async fn refresh(&mut self, pool: &PgPool) -> anyhow::Result<Refreshed> {
        self.snapshot.job_counts.clear();
        let due = self.last_full.is_none_or(|at| at.elapsed() >= FULL_EVERY);
        if let (Some(cursor), false) = (&self.cursor, due) {
            // More events since the cursor than a quarter of the machines: read
            // them all rather than collect the machines the events name.
            let most = (self.snapshot.machines.len() / 4) as i64;
            let (xmin, events): (String, i64) = sqlx::query_as(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
                        (SELECT count(*) FROM (SELECT FROM events WHERE txid >= $1::text::xid8
                                               LIMIT $2 + 1) e)",
            )
            .bind(cursor)
            .bind(most)
            .fetch_one(pool)
            .await
            .context("counting the events since the last read")?;
            if events <= most {
                let changed: Vec<MachineId> = sqlx::query_scalar(
                    "SELECT id FROM machines WHERE sched_txid >= $1::text::xid8
                     UNION
                     SELECT machine_id FROM events
                     WHERE txid >= $1::text::xid8 AND machine_id IS NOT NULL",
                )
                .bind(cursor)
                .fetch_all(pool)
                .await
                .context("reading which machines changed")?;
                if changed.len() as i64 <= most {
                    let rows = read_machines_in(pool, &changed).await?;
                    let read = rows.len() as u64;
                    self.apply(&changed, rows);
                    self.cursor = Some(xmin);
                    return Ok(Refreshed {
                        rows: read,
                        full: false,
                    });
                }
            }
        }
        if self.snapshot.machines.len() < self.small {
            // A small cell: read it all, every time (no cursor to keep).
            self.snapshot = read_machines(pool, false).await?;
            self.reindex();
            self.cursor = None;
            return Ok(Refreshed {
                rows: self.snapshot.machines.len() as u64,
                full: true,
            });
        }
        // The cursor first: whatever finished before it, the read below sees.
        let xmin: String =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                .fetch_one(pool)
                .await
                .context("reading the snapshot's xmin")?;
        self.snapshot = read_machines(pool, true).await?;
        self.reindex();
        self.cursor = Some(xmin);
        self.last_full = Some(Instant::now());
        Ok(Refreshed {
            rows: self.snapshot.machines.len() as u64,
            full: true,
        })
    }

    /// Read `machines` again whole (row and usage), and nothing else: after a
    /// commit lost races on them, what another writer put there is what the
    /// next page needs, and a read of every machine would cost far more (with
    /// a second scheduler writing, the changes since the cursor are always
    /// more than a quarter). The cursor stays: the next refresh still reads
    /// whatever changed since it, these machines included.
    pub async fn reread(
        &mut self,
        pool: &PgPool,
        machines: &[MachineId],
    ) -> anyhow::Result<Refreshed> {
        let rows = read_machines_in(pool, machines).await?;
        let read = rows.len() as u64;
        self.apply(machines, rows);
        Ok(Refreshed {
            rows: read,
            full: false,
        })
    }

    /// Replace the `changed` machines by their rows as read: `Some` (up) is
    /// put in, `None` (not up) or no row at all is taken out.
    fn apply(&mut self, changed: &[MachineId], rows: Vec<(MachineId, Option<crate::Machine>)>) {
        let mut fresh: HashMap<MachineId, Option<crate::Machine>> = rows.into_iter().collect();
        let mut moved = false;
        for id in changed {
            let now = fresh.remove(id).flatten();
            match (self.index.get(id).copied(), now) {
                (Some(i), Some(m)) => {
                    moved |= self.snapshot.machines[i].name != m.name;
                    self.snapshot.machines[i] = m;
                }
                (None, Some(m)) => {
                    self.snapshot.machines.push(m);
                    moved = true;
                }
                (Some(_), None) => {
                    self.snapshot.machines.retain(|m| m.id != *id);
                    self.reindex();
                    moved = true;
                }
                (None, None) => {}
            }
        }
        if moved {
            self.snapshot.machines.sort_by(|a, b| a.name.cmp(&b.name));
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.index = self
            .snapshot
            .machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Machine;
    use borg_shared::wire::{Capacity, PortRange};

    fn machine(name: &str, cpu: u64) -> Machine {
        Machine {
            id: MachineId::new(),
            name: name.to_string(),
            labels: Default::default(),
            capacity: Capacity {
                cpu: borg_shared::MilliCpu(cpu),
                ..Capacity::default()
            },
            used: Capacity::default(),
            ports: PortRange {
                first: 20000,
                last: 20010,
            },
            used_ports: Vec::new(),
        }
    }

    fn names(cache: &MachineCache) -> Vec<(&str, u64)> {
        cache
            .snapshot
            .machines
            .iter()
            .map(|m| (m.name.as_str(), m.capacity.cpu.0))
            .collect()
    }

    #[test]
    fn changed_machines_are_replaced_added_and_removed_in_name_order() {
        let (a, b, c) = (machine("a", 1), machine("b", 1), machine("c", 1));
        let mut cache = MachineCache::default();
        cache.snapshot.machines = vec![a.clone(), b.clone(), c.clone()];
        cache.reindex();

        let mut bigger_b = b.clone();
        bigger_b.capacity.cpu.0 = 8;
        let new = machine("aa", 2);
        let gone = MachineId::new(); // named by an event, no row: nothing to do
        cache.apply(
            &[b.id, a.id, new.id, c.id, gone],
            vec![
                (b.id, Some(bigger_b)),
                (a.id, None), // no longer up
                (new.id, Some(new.clone())),
                // c: no row at all (left out of the read)
            ],
        );
        assert_eq!(names(&cache), vec![("aa", 2), ("b", 8)]);
        for (i, m) in cache.snapshot.machines.iter().enumerate() {
            assert_eq!(cache.index[&m.id], i);
        }
        assert_eq!(cache.index.len(), 2);
    }
}

//! Machines: registration by their borglets, listing, and what the poller and
//! the scheduler need to know of them.

use crate::moves::{machine_event, MovedMachine, Transitions};
use crate::rows::{capacity, MachineRow};
use crate::sql::{USAGE_BY_MACHINE, USAGE_OF_MACHINES};
use crate::{Store, CHANNEL_PENDING};
use borg_shared::wire::{AttemptPhase, AttemptReport, Capacity, MachineView, RegisterMachine};
use borg_shared::{MachineId, MachineState};
use sqlx::types::Json;
use std::collections::HashMap;

/// What the poller needs to talk to a machine.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MachineTarget {
    pub id: MachineId,
    pub name: String,
    pub address: String,
    pub state: MachineState,
    /// What the master presents to the borglet (`agent::sync_key` of its credential).
    pub credential_hash: Option<String>,
}

/// The requests of a machine's live attempts, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub used: Capacity,
    pub attempts: i64,
}

/// Live usage of `machines` (all machines when `None`), read in the caller's
/// transaction or on the pool.
pub async fn machine_usage<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    machines: Option<&[MachineId]>,
) -> crate::Result<HashMap<MachineId, Usage>> {
    type Row = (MachineId, i64, i64, i64, i64);
    let rows: Vec<Row> = match machines {
        Some(ids) => {
            sqlx::query_as(USAGE_OF_MACHINES)
                .bind(ids)
                .fetch_all(db)
                .await?
        }
        None => sqlx::query_as(USAGE_BY_MACHINE).fetch_all(db).await?,
    };
    Ok(rows
        .into_iter()
        .map(|(id, cpu, memory, disk, n)| {
            let usage = Usage {
                used: capacity(cpu, memory, disk),
                attempts: n,
            };
            (id, usage)
        })
        .collect())
}

pub(crate) const MACHINE_COLUMNS: &str =
    "m.id, m.name, m.address, m.state, m.labels, m.cpu_milli, m.memory, m.disk, m.port_first, m.port_last,
     m.last_heard, m.isolation, m.version, m.cpu_used_milli, m.memory_used";

/// Usage is written at most this often per machine: every poll carries it, but
/// a write per poll of every attempt's row would cost more than it tells.
const USAGE_WRITE_EVERY_SECS: i32 = 5;

impl Store {
    /// A borglet announces itself; known names keep their id (and their attempts).
    /// Returns the machine and whether it was new. No proof is asked: the API
    /// registers through [`Store::enroll_machine`].
    pub async fn register_machine(
        &self,
        req: &RegisterMachine,
    ) -> crate::Result<(MachineView, bool)> {
        match self
            .enroll_machine(req, |_| crate::Admission::Admit {
                credential_hash: None,
            })
            .await?
        {
            crate::Enrolled::Registered { machine, inserted } => Ok((machine, inserted)),
            crate::Enrolled::Refused { reason } => Err(crate::StoreError::Vanished(reason)),
        }
    }

    /// Insert or update the machine in `tx` (its row already locked if it exists);
    /// `credential_hash` replaces the stored one when given. Emit the transitions
    /// after the commit.
    pub(crate) async fn upsert_machine(
        tx: &mut sqlx::PgConnection,
        req: &RegisterMachine,
        from: Option<MachineState>,
        credential_hash: Option<&str>,
    ) -> crate::Result<(MachineId, Transitions)> {
        let (id, state): (MachineId, MachineState) = sqlx::query_as(
            "INSERT INTO machines (id, name, address, labels, cpu_milli, memory, disk, state, last_heard,
                                   isolation, version, port_first, port_last, credential_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'up', now(), $8, $9, $10, $11, $12)
             ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, labels = EXCLUDED.labels,
                 cpu_milli = EXCLUDED.cpu_milli, memory = EXCLUDED.memory, disk = EXCLUDED.disk,
                 isolation = EXCLUDED.isolation, version = EXCLUDED.version,
                 port_first = EXCLUDED.port_first, port_last = EXCLUDED.port_last,
                 credential_hash = COALESCE(EXCLUDED.credential_hash, machines.credential_hash),
                 state = CASE WHEN machines.state = 'down' THEN 'up'::machine_state ELSE machines.state END,
                 last_heard = now()
             RETURNING id, state",
        )
        .bind(MachineId::new())
        .bind(&req.name)
        .bind(&req.address)
        .bind(Json(&req.labels))
        .bind(req.capacity.cpu.0 as i64)
        .bind(req.capacity.memory.0 as i64)
        .bind(req.capacity.disk.0 as i64)
        .bind(req.isolation.map(|m| m.as_str()))
        .bind(req.version.as_deref())
        .bind(i32::from(req.ports.first))
        .bind(i32::from(req.ports.last))
        .bind(credential_hash)
        .fetch_one(&mut *tx)
        .await?;
        let mut moved = Transitions::default();
        if from != Some(state) {
            let mv = MovedMachine {
                machine: id,
                name: req.name.clone(),
                from,
                to: state,
            };
            machine_event(&mut *tx, &mv).await?;
            moved.machines.push(mv);
        }
        // New capacity may fit tasks that were waiting.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_PENDING)
            .bind(format!("machine:{id}"))
            .execute(&mut *tx)
            .await?;
        Ok((id, moved))
    }

    pub async fn machine(&self, name: &str) -> crate::Result<Option<MachineView>> {
        let row: Option<MachineRow> = sqlx::query_as(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let usage = machine_usage(&self.pool, Some(&[row.id])).await?;
        let usage = usage.get(&row.id).copied().unwrap_or_default();
        Ok(Some(row.into_view(usage)))
    }

    /// Every machine the poller should talk to.
    pub async fn poll_targets(&self) -> crate::Result<Vec<MachineTarget>> {
        Ok(sqlx::query_as(
            "SELECT id, name, address, state, credential_hash FROM machines ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Keep the usage a borglet reported: each live attempt's latest sample and
    /// their sum on the machine, at most every few seconds per machine (one
    /// cheap conditional statement decides). A machine that never reported
    /// usage (unisolated) keeps none rather than a misleading zero. Written as
    /// leader at `epoch`: each statement checks the lease itself, so a deposed
    /// leader writes nothing, and a poll that has nothing due costs no extra
    /// round trip. Samples are not state: the check takes no lock on the lease
    /// row (a takeover committing during the statement may see one last sample).
    pub async fn record_usage(
        &self,
        machine: MachineId,
        epoch: i64,
        reports: &[AttemptReport],
    ) -> crate::Result<()> {
        let live: Vec<(uuid::Uuid, i64, i64)> = reports
            .iter()
            .filter(|r| matches!(r.phase, AttemptPhase::Running | AttemptPhase::Stopping))
            .filter_map(|r| {
                let u = r.usage?;
                Some((r.id.0, clamp(u.cpu.0), clamp(u.memory.0)))
            })
            .collect();
        let cpu: i64 = live.iter().map(|l| l.1).fold(0, i64::saturating_add);
        let memory: i64 = live.iter().map(|l| l.2).fold(0, i64::saturating_add);
        let due: Option<(MachineId,)> = sqlx::query_as(
            "UPDATE machines SET cpu_used_milli = $2, memory_used = $3, usage_at = now()
             WHERE id = $1 AND ($4 OR cpu_used_milli IS NOT NULL)
               AND (usage_at IS NULL OR usage_at < now() - make_interval(secs => $5))
               AND EXISTS (SELECT 1 FROM leader_lease WHERE id = 1 AND epoch = $6)
             RETURNING id",
        )
        .bind(machine)
        .bind(cpu)
        .bind(memory)
        .bind(!live.is_empty())
        .bind(f64::from(USAGE_WRITE_EVERY_SECS))
        .bind(epoch)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() || live.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE attempts a SET cpu_used_milli = u.cpu, memory_used = u.memory, usage_at = now()
             FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(id, cpu, memory)
             WHERE a.id = u.id AND a.machine_id = $4
               AND EXISTS (SELECT 1 FROM leader_lease WHERE id = 1 AND epoch = $5)",
        )
        .bind(live.iter().map(|l| l.0).collect::<Vec<_>>())
        .bind(live.iter().map(|l| l.1).collect::<Vec<_>>())
        .bind(live.iter().map(|l| l.2).collect::<Vec<_>>())
        .bind(machine)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

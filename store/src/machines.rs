//! Machines: registration by their borglets, listing, and what the poller and
//! the scheduler need to know of them.

use crate::moves::{machine_event, MovedMachine, Transitions};
use crate::rows::{capacity, MachineRow};
use crate::sql::{USAGE_BY_MACHINE, USAGE_OF_MACHINES};
use crate::{Store, CHANNEL_PENDING};
use borg_shared::wire::{Capacity, MachineView, RegisterMachine};
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

const MACHINE_COLUMNS: &str =
    "m.id, m.name, m.address, m.state, m.labels, m.cpu_milli, m.memory, m.disk, m.port_first, m.port_last, m.last_heard";

impl Store {
    /// A borglet announces itself; known names keep their id (and their attempts).
    /// Returns the machine and whether it was new.
    pub async fn register_machine(
        &self,
        req: &RegisterMachine,
    ) -> crate::Result<(MachineView, bool)> {
        let mut tx = self.pool.begin().await?;
        let before: Option<(MachineState,)> =
            sqlx::query_as("SELECT state FROM machines WHERE name = $1 FOR NO KEY UPDATE")
                .bind(&req.name)
                .fetch_optional(&mut *tx)
                .await?;
        let (id, state): (MachineId, MachineState) = sqlx::query_as(
            "INSERT INTO machines (id, name, address, labels, cpu_milli, memory, disk, port_first, port_last, state, last_heard)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'up', now())
             ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, labels = EXCLUDED.labels,
                 cpu_milli = EXCLUDED.cpu_milli, memory = EXCLUDED.memory, disk = EXCLUDED.disk,
                 port_first = EXCLUDED.port_first, port_last = EXCLUDED.port_last,
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
        .bind(i32::from(req.ports.first))
        .bind(i32::from(req.ports.last))
        .fetch_one(&mut *tx)
        .await?;
        let from = before.map(|(s,)| s);
        let mut moved = Transitions::default();
        if from != Some(state) {
            let mv = MovedMachine {
                machine: id,
                name: req.name.clone(),
                from,
                to: state,
            };
            machine_event(&mut tx, &mv).await?;
            moved.machines.push(mv);
        }
        // New capacity may fit tasks that were waiting.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_PENDING)
            .bind(format!("machine:{id}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        moved.emit();
        let inserted = from.is_none();
        tracing::info!(machine = %req.name, machine_id = %id, address = %req.address, inserted, "machine registered");
        let view = self.machine(&req.name).await?.ok_or_else(|| {
            crate::StoreError::Vanished(format!("machine {} vanished after registering", req.name))
        })?;
        Ok((view, inserted))
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

    pub async fn list_machines(&self) -> crate::Result<Vec<MachineView>> {
        let rows: Vec<MachineRow> = sqlx::query_as(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m ORDER BY m.name"
        ))
        .fetch_all(&self.pool)
        .await?;
        let usage = machine_usage(&self.pool, None).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let u = usage.get(&r.id).copied().unwrap_or_default();
                r.into_view(u)
            })
            .collect())
    }

    /// Every machine the poller should talk to.
    pub async fn poll_targets(&self) -> crate::Result<Vec<MachineTarget>> {
        Ok(
            sqlx::query_as("SELECT id, name, address, state FROM machines ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Record that the machine answered. At most one write a second per machine:
    /// `last_heard` feeds a down-after of seconds, and every write is a durable commit.
    pub async fn touch_machine(&self, id: MachineId) -> crate::Result<()> {
        sqlx::query(
            "UPDATE machines SET last_heard = now()
             WHERE id = $1 AND (last_heard IS NULL OR last_heard < now() - interval '1 second')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

//! Machines: registration by their borglets, listing, and what the poller needs.

use super::rows::{MachineRow, MachineTarget};
use super::{Store, CHANNEL_PENDING};
use borg_shared::wire::{MachineView, RegisterMachine};
use borg_shared::MachineId;
use sqlx::types::Json;

const MACHINE_COLUMNS: &str =
    "m.id, m.name, m.address, m.state, m.labels, m.cpu_milli, m.memory, m.disk,
    COALESCE(u.cpu, 0)::bigint AS used_cpu, COALESCE(u.memory, 0)::bigint AS used_memory,
    COALESCE(u.disk, 0)::bigint AS used_disk, COALESCE(u.n, 0) AS tasks, m.last_heard";

const USAGE_JOIN: &str =
    "LEFT JOIN (SELECT machine_id, sum(cpu_milli) AS cpu, sum(memory) AS memory,
                       sum(disk) AS disk, count(*) AS n
                FROM attempts WHERE state IN ('assigned', 'starting', 'running')
                GROUP BY machine_id) u ON u.machine_id = m.id";

impl Store {
    /// A borglet announces itself; known names keep their id (and their attempts).
    /// Returns the machine and whether it was new.
    pub async fn register_machine(
        &self,
        req: &RegisterMachine,
    ) -> anyhow::Result<(MachineView, bool)> {
        let mut tx = self.pool.begin().await?;
        let (id, inserted): (MachineId, bool) = sqlx::query_as(
            "INSERT INTO machines (id, name, address, labels, cpu_milli, memory, disk, state, last_heard)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'up', now())
             ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, labels = EXCLUDED.labels,
                 cpu_milli = EXCLUDED.cpu_milli, memory = EXCLUDED.memory, disk = EXCLUDED.disk,
                 state = CASE WHEN machines.state = 'down' THEN 'up'::machine_state ELSE machines.state END,
                 last_heard = now()
             RETURNING id, (xmax = 0) AS inserted",
        )
        .bind(MachineId::new())
        .bind(&req.name)
        .bind(&req.address)
        .bind(Json(&req.labels))
        .bind(req.capacity.cpu.0 as i64)
        .bind(req.capacity.memory.0 as i64)
        .bind(req.capacity.disk.0 as i64)
        .fetch_one(&mut *tx)
        .await?;
        // New capacity may fit tasks that were waiting.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_PENDING)
            .bind(format!("machine:{id}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(machine = %req.name, machine_id = %id, address = %req.address, inserted, "machine registered");
        let view = self
            .machine(&req.name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("machine {} vanished after registering", req.name))?;
        Ok((view, inserted))
    }

    pub async fn machine(&self, name: &str) -> anyhow::Result<Option<MachineView>> {
        let row: Option<MachineRow> = sqlx::query_as(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m {USAGE_JOIN} WHERE m.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    pub async fn list_machines(&self) -> anyhow::Result<Vec<MachineView>> {
        let rows: Vec<MachineRow> = sqlx::query_as(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m {USAGE_JOIN} ORDER BY m.name"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Every machine the poller should talk to.
    pub async fn poll_targets(&self) -> anyhow::Result<Vec<MachineTarget>> {
        Ok(
            sqlx::query_as("SELECT id, name, address, state FROM machines ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn touch_machine(&self, id: MachineId) -> anyhow::Result<()> {
        sqlx::query("UPDATE machines SET last_heard = now() WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

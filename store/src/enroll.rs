//! Registration with proof: the caller decides, under the machine row's lock,
//! whether a registration is admitted (and with which new credential), so two
//! racing registrations of one name cannot both pass a check made on stale data.
//! A refused registration of a known machine leaves an event row.

use crate::{Store, Transitions};
use borg_shared::wire::{MachineView, RegisterMachine};
use borg_shared::{MachineId, MachineState};

/// What the store has of a machine that registers again.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KnownMachine {
    pub id: MachineId,
    pub address: String,
    pub state: MachineState,
    /// `agent::sync_key` of its credential; NULL before credentials existed.
    pub credential_hash: Option<String>,
}

/// The caller's verdict on a registration.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Register; store this credential hash (None keeps the machine's).
    Admit { credential_hash: Option<String> },
    /// Refuse, saying why (kept in the event row of a known machine).
    Refuse { reason: String },
}

#[derive(Debug, Clone)]
pub enum Enrolled {
    Registered {
        machine: MachineView,
        inserted: bool,
    },
    Refused {
        reason: String,
    },
}

impl Store {
    /// Register `req` if `admit`, shown the machine as stored (None if new), says so.
    pub async fn enroll_machine(
        &self,
        req: &RegisterMachine,
        admit: impl FnOnce(Option<&KnownMachine>) -> Admission,
    ) -> crate::Result<Enrolled> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        let known: Option<KnownMachine> = sqlx::query_as(
            "SELECT id, address, state, credential_hash FROM machines WHERE name = $1 FOR NO KEY UPDATE",
        )
        .bind(&req.name)
        .fetch_optional(&mut *tx)
        .await?;
        let credential_hash = match admit(known.as_ref()) {
            Admission::Admit { credential_hash } => credential_hash,
            Admission::Refuse { reason } => {
                if let Some(m) = &known {
                    sqlx::query(
                        "INSERT INTO events (kind, machine_id, from_state, to_state, reason)
                         VALUES ('machine', $1, $2, $2, $3)",
                    )
                    .bind(m.id)
                    .bind(m.state.as_str())
                    .bind(format!("registration refused: {reason}"))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                metrics::counter!("borg_registrations_refused_total").increment(1);
                return Ok(Enrolled::Refused { reason });
            }
        };
        let from = known.as_ref().map(|m| m.state);
        let (id, moved): (MachineId, Transitions) =
            Store::upsert_machine(&mut tx, req, from, credential_hash.as_deref()).await?;
        tx.commit().await?;
        moved.emit();
        let inserted = from.is_none();
        tracing::info!(machine = %req.name, machine_id = %id, address = %req.address, inserted,
            new_credential = credential_hash.is_some(), "machine registered");
        let machine = self.machine(&req.name).await?.ok_or_else(|| {
            crate::StoreError::Vanished(format!("machine {} vanished after registering", req.name))
        })?;
        Ok(Enrolled::Registered { machine, inserted })
    }
}

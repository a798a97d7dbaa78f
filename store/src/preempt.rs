//! Preemption: a production task that fits nowhere asks lower-band attempts to
//! stop. The victims' attempts keep their capacity until their borglet reports
//! them gone (so nothing is double-booked); then their tasks go back to
//! `pending` with the reason, and the run they lost is not counted against
//! their restart budget (`reports.rs`).

use crate::{live_attempt, Store, CHANNEL_PLACED};
use borg_shared::{AttemptId, MachineId};

/// The `stop_reason` prefix that marks a preempted attempt.
pub const PREEMPTED_BY: &str = "preempted by ";

/// One decision of a scheduler: stop these attempts on this machine to make
/// room for `by` (`JOB/INDEX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub machine: MachineId,
    pub by: String,
    pub victims: Vec<AttemptId>,
}

impl Store {
    /// Ask the victims to stop. Only attempts still live and not already asked
    /// to stop are marked; returns how many. The machines' sync loops wake at
    /// commit, and their borglets stop the victims.
    pub async fn preempt(&self, preemptions: &[Preemption]) -> crate::Result<usize> {
        let (ids, reasons): (Vec<AttemptId>, Vec<String>) = preemptions
            .iter()
            .flat_map(|p| {
                p.victims
                    .iter()
                    .map(move |v| (*v, format!("{PREEMPTED_BY}{}", p.by)))
            })
            .unzip();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        let marked: Vec<(AttemptId, MachineId, String)> = sqlx::query_as(concat!(
            "WITH victims AS (
                 SELECT a.id FROM attempts a
                 JOIN unnest($1::uuid[]) AS u(id) ON u.id = a.id
                 WHERE a.state IN ",
            live_attempt!(),
            " AND a.stop_reason IS NULL
                 ORDER BY a.id FOR UPDATE OF a)
             UPDATE attempts a SET stop_reason = u.reason
             FROM victims v, unnest($1::uuid[], $2::text[]) AS u(id, reason)
             WHERE a.id = v.id AND u.id = a.id
             RETURNING a.id, a.machine_id, u.reason"
        ))
        .bind(&ids)
        .bind(&reasons)
        .fetch_all(&mut *tx)
        .await?;
        let mut machines: Vec<MachineId> = marked.iter().map(|(_, m, _)| *m).collect();
        machines.sort();
        machines.dedup();
        sqlx::query("SELECT pg_notify($1, m::text) FROM unnest($2::uuid[]) AS m")
            .bind(CHANNEL_PLACED)
            .bind(&machines)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for (attempt, machine, reason) in &marked {
            tracing::info!(%attempt, %machine, reason, "attempt asked to stop");
        }
        Ok(marked.len())
    }
}

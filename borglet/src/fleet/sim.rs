//! Simulated processes behind the real sync handler: an attempt "starts" at
//! once as running with a made-up pid, "exits" with the configured code after
//! the configured run time (or runs until stopped), obeys a stop at once as a
//! process killed by SIGTERM, and restarts in place by the attempt's own
//! restart policy, through the same attempt table and transitions as real ones.

use crate::nudge::Nudger;
use crate::restart::Decision;
use crate::state::{Attempt, AttemptTable, Event, Exit, Phase};
use crate::tasks::Tasks;
use borg_shared::wire::AttemptSpec;
use borg_shared::AttemptId;
use chrono::Utc;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How every simulated task behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// A task ends by itself after this long (`None`: it runs until stopped).
    pub runs_for: Option<Duration>,
    /// The exit code it ends with.
    pub exit_code: i32,
}

/// Pids handed out to simulated processes, unique over the whole fleet.
static NEXT_PID: AtomicI32 = AtomicI32::new(1_000_000);

fn next_pid() -> i32 {
    NEXT_PID.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
pub struct SimTasks {
    table: Arc<AttemptTable>,
    nudger: Arc<Nudger>,
    behaviour: Behaviour,
    /// Cancels every simulated process's timer when the fleet stops.
    shutdown: CancellationToken,
}

impl SimTasks {
    pub fn new(
        table: Arc<AttemptTable>,
        nudger: Arc<Nudger>,
        behaviour: Behaviour,
        shutdown: CancellationToken,
    ) -> Self {
        SimTasks {
            table,
            nudger,
            behaviour,
            shutdown,
        }
    }

    /// Run attempt `id` (already running in the table) until it ends by
    /// itself, restarting in place while its policy says so.
    async fn live(table: Arc<AttemptTable>, nudger: Arc<Nudger>, id: AttemptId, b: Behaviour) {
        let Some(runs_for) = b.runs_for else {
            return;
        };
        loop {
            tokio::time::sleep(runs_for).await;
            let decision = match table.on_exit(id, Exit::Code(b.exit_code), Utc::now()) {
                Ok(d) => d,
                // Stopped meanwhile: the stop recorded its end.
                Err(_) => return,
            };
            nudger.request();
            let wait = match decision {
                Decision::Restart(wait) => wait,
                Decision::Final(_) => {
                    if let Some(token) = table.exit_token(id) {
                        token.cancel();
                    }
                    return;
                }
            };
            tokio::time::sleep(wait).await;
            let restarted = Event::Restarted {
                at: Utc::now(),
                pid: next_pid(),
            };
            // Stopped while waiting: nothing to restart.
            if table.apply(id, restarted).is_err() {
                return;
            }
            nudger.request();
        }
    }
}

impl Tasks for SimTasks {
    fn table(&self) -> &Arc<AttemptTable> {
        &self.table
    }

    fn mark_acked(&self, _ids: Vec<AttemptId>) {
        // Nothing on disk to mark: the table has forgotten them.
    }

    fn start_all(self: Arc<Self>, specs: Vec<AttemptSpec>) -> BoxFuture<'static, ()> {
        for spec in specs {
            let id = spec.id;
            let phase = Phase::Running {
                pid: next_pid(),
                started_at: Utc::now(),
            };
            self.table
                .insert(Attempt::new(spec, phase, CancellationToken::new()));
            let (table, nudger, b) = (self.table.clone(), self.nudger.clone(), self.behaviour);
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = Self::live(table, nudger, id, b) => {}
                }
            });
        }
        Box::pin(async {})
    }

    fn stop_unwanted(&self, wanted: &HashSet<AttemptId>) {
        let mut stopped = false;
        for id in self.table.running_ids_except(|id| wanted.contains(id)) {
            // `None` for one waiting to restart: stopped at once by the table.
            if let Some(ticket) = self.table.begin_stop(id) {
                // The simulated process dies of the SIGTERM at once.
                let _ = self.table.on_exit(id, Exit::Signal(15), Utc::now());
                ticket.exited.cancel();
            }
            stopped = true;
        }
        if stopped {
            self.nudger.request();
        }
    }
}

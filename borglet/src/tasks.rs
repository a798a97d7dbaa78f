//! The seam between the sync handler and whatever runs the tasks: the real
//! [`Supervisor`] (the keeper, process groups, cgroups) or the fleet mode's
//! simulated processes (`crate::fleet::SimTasks`). The sync handler, its
//! credential and epoch checks and the attempt table are the same for both.

use crate::state::AttemptTable;
use crate::supervisor::Supervisor;
use borg_shared::wire::AttemptSpec;
use borg_shared::AttemptId;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::Arc;

pub trait Tasks: Send + Sync + std::fmt::Debug {
    /// Every attempt this borglet knows; reports are read from it.
    fn table(&self) -> &Arc<AttemptTable>;
    /// The master has recorded these finished attempts (already forgotten by the table).
    fn mark_acked(&self, ids: Vec<AttemptId>);
    /// Start every spec; each ends in the table as running or failed to start.
    fn start_all(self: Arc<Self>, specs: Vec<AttemptSpec>) -> BoxFuture<'static, ()>;
    /// Stop every running attempt not in `wanted`.
    fn stop_unwanted(&self, wanted: &HashSet<AttemptId>);
}

impl Tasks for Supervisor {
    fn table(&self) -> &Arc<AttemptTable> {
        Supervisor::table(self)
    }

    fn mark_acked(&self, ids: Vec<AttemptId>) {
        Supervisor::mark_acked(self, ids)
    }

    fn start_all(self: Arc<Self>, specs: Vec<AttemptSpec>) -> BoxFuture<'static, ()> {
        Box::pin(async move { Supervisor::start_all(&self, specs).await })
    }

    fn stop_unwanted(&self, wanted: &HashSet<AttemptId>) {
        Supervisor::stop_unwanted(self, wanted)
    }
}

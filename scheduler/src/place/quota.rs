//! Quota per owner and band, charged with each placement of the batch. A task
//! over its owner's quota waits with a reason that says by how much and where
//! its job stands among the owner's waiting jobs of that band.

use crate::snapshot::{PendingTask, Snapshot};
use borg_shared::quota::{over, Band};
use borg_shared::wire::Capacity;
use borg_shared::JobId;
use std::collections::HashMap;

pub struct QuotaLedger<'a> {
    limits: &'a borg_store::QuotaTable,
    used: HashMap<(String, Band), Capacity>,
    /// Jobs found waiting for quota, per (owner, band), in queue order.
    waiting: HashMap<(String, Band), Vec<JobId>>,
}

impl<'a> QuotaLedger<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        QuotaLedger {
            limits: &snapshot.quotas,
            used: snapshot.quota_used.clone(),
            waiting: HashMap::new(),
        }
    }

    fn key(task: &PendingTask) -> (String, Band) {
        (task.owner.to_string(), Band::of(i64::from(task.priority)))
    }

    /// Why `task` must wait for quota, or `None` when its owner's band admits it.
    pub fn check(&mut self, task: &PendingTask) -> Option<String> {
        if self.limits.is_empty() {
            return None;
        }
        let key = Self::key(task);
        let limit = self.limits.get(&key)?;
        let in_use = self.used.get(&key).copied().unwrap_or_default();
        let [dim, cap, held, ask] = over(limit, &in_use, &task.request)?;
        let queue = self.waiting.entry(key.clone()).or_default();
        let position = match queue.iter().position(|j| *j == task.job_id) {
            Some(i) => i + 1,
            None => {
                queue.push(task.job_id);
                queue.len()
            }
        };
        let (owner, band) = key;
        Some(format!(
            "waiting for quota: owner {owner}, {band} {dim} {cap}, in use {held}, asks {ask} \
             (job {position} in line for it)"
        ))
    }

    /// Charge a placement of `task`.
    pub fn charge(&mut self, task: &PendingTask) {
        if self.limits.is_empty() {
            return;
        }
        let key = Self::key(task);
        if self.limits.contains_key(&key) {
            let used = self.used.entry(key).or_default();
            *used = used.saturating_add(&task.request);
        }
    }
}

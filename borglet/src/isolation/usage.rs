//! Usage sampling: every few seconds a background task reads each live
//! attempt's cgroup counters (off the async threads) and stores cpu as a rate
//! and memory in the attempt table, so a sync only copies the latest values and
//! never reads thousands of files itself.

use super::cgroup::AttemptCgroup;
use crate::state::AttemptTable;
use borg_shared::wire::ResourceUsage;
use borg_shared::{AttemptId, Bytes, MilliCpu};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One attempt's usage at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub id: AttemptId,
    pub usage: ResourceUsage,
}

/// Keeps each attempt's previous cpu counter to turn totals into a rate.
#[derive(Debug, Default)]
pub struct UsageSampler {
    prev: HashMap<AttemptId, (Instant, u64)>,
}

impl UsageSampler {
    /// Read the counters of `cgroups` (blocking). An attempt appears from its
    /// second sample on, when a cpu rate can be known; attempts no longer listed
    /// are forgotten.
    pub fn sample(&mut self, cgroups: &[(AttemptId, Arc<AttemptCgroup>)]) -> Vec<Sample> {
        let mut next = HashMap::with_capacity(cgroups.len());
        let mut out = Vec::with_capacity(cgroups.len());
        for (id, cg) in cgroups {
            let (memory, cpu_ns) = cg.usage_counters();
            let now = Instant::now();
            let Some(cpu_ns) = cpu_ns else {
                continue;
            };
            if let Some((then, before)) = self.prev.get(id) {
                out.push(Sample {
                    id: *id,
                    usage: ResourceUsage {
                        cpu: cpu_rate(*before, cpu_ns, now.saturating_duration_since(*then)),
                        memory: Bytes(memory.unwrap_or(0)),
                    },
                });
            }
            next.insert(*id, (now, cpu_ns));
        }
        self.prev = next;
        out
    }
}

/// Sample the table's live cgroups every `every` until `shutdown`.
pub async fn sample_forever(
    table: Arc<AttemptTable>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut sampler = UsageSampler::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cgroups = table.live_cgroups();
        let n = cgroups.len();
        let began = Instant::now();
        let sampled = tokio::task::spawn_blocking(move || {
            let samples = sampler.sample(&cgroups);
            (sampler, samples)
        })
        .await;
        match sampled {
            Ok((back, samples)) => {
                sampler = back;
                table.set_usage(&samples);
                tracing::debug!(
                    cgroups = n,
                    took_us = began.elapsed().as_micros() as u64,
                    "usage sampled"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "usage sampling failed");
                sampler = UsageSampler::default();
            }
        }
    }
}

/// Millicores used between two cpu-time totals (ns) taken `elapsed` apart.
pub fn cpu_rate(before_ns: u64, after_ns: u64, elapsed: Duration) -> MilliCpu {
    let wall = elapsed.as_nanos();
    if wall == 0 {
        return MilliCpu(0);
    }
    let used = u128::from(after_ns.saturating_sub(before_ns));
    MilliCpu((used * 1000 / wall) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_totals_become_a_rate() {
        let s = Duration::from_secs(1);
        assert_eq!(cpu_rate(0, 500_000_000, s), MilliCpu(500));
        assert_eq!(cpu_rate(1_000, 2_000_001_000, s), MilliCpu(2000));
        assert_eq!(
            cpu_rate(10, 5, s),
            MilliCpu(0),
            "a reset counter is not negative"
        );
        assert_eq!(cpu_rate(0, 5, Duration::ZERO), MilliCpu(0));
    }

    #[test]
    fn an_attempt_is_reported_from_its_second_sample() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "4096").unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 100\n").unwrap();
        let id = AttemptId::new();
        let cg = Arc::new(AttemptCgroup::V2 {
            dir: dir.path().into(),
        });
        let mut s = UsageSampler::default();
        assert!(s.sample(&[(id, Arc::clone(&cg))]).is_empty());
        let second = s.sample(&[(id, Arc::clone(&cg))]);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].usage.memory, Bytes(4096));
        assert!(s.sample(&[]).is_empty());
        assert!(s.prev.is_empty(), "gone attempts are forgotten");
    }
}

//! An attempt's limits as cgroup values: the memory hard cap, the cpu weight from
//! the request, the optional cpu hard cap and the pids cap.

use super::IsolationError;
use borg_shared::spec::MIN_MEMORY_LIMIT;
use borg_shared::wire::AttemptSpec;
use borg_shared::{Bytes, MilliCpu};

/// Default `pids.max` of an attempt (`--pids-limit`).
pub const DEFAULT_PIDS: u64 = 4096;
/// The CFS period a cpu cap is expressed in (the kernel's default, 100 ms).
pub const CFS_PERIOD_US: u64 = 100_000;
/// The kernel refuses a quota below 1 ms.
const MIN_QUOTA_US: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hard memory cap: `memory_limit`, else the request.
    pub memory: Bytes,
    /// The request: sets the relative weight under contention.
    pub cpu: MilliCpu,
    /// Hard cpu cap, if asked for.
    pub cpu_limit: Option<MilliCpu>,
    pub pids: u64,
}

impl Limits {
    /// The limits an attempt asks for. A memory cap too small to run anything is
    /// refused here so the attempt fails with that reason, not with a cryptic exec error.
    pub fn of(spec: &AttemptSpec, pids: u64) -> Result<Limits, IsolationError> {
        let memory = spec.memory_limit.unwrap_or(spec.resources.memory);
        if memory < MIN_MEMORY_LIMIT {
            return Err(IsolationError::MemoryTooSmall(memory));
        }
        Ok(Limits {
            memory,
            cpu: spec.resources.cpu,
            cpu_limit: spec.cpu_limit,
            pids,
        })
    }

    /// v1 `cpu.shares`: 1024 per core, at least 2 (the kernel's minimum).
    pub fn cpu_shares(&self) -> u64 {
        (self.cpu.0.saturating_mul(1024) / 1000).clamp(2, 262_144)
    }

    /// v2 `cpu.weight` (1..=10000), mapped from the shares as the kubelet and
    /// runc do, so one request weighs the same on either hierarchy.
    pub fn cpu_weight(&self) -> u64 {
        1 + ((self.cpu_shares() - 2) * 9999) / 262_142
    }

    /// CFS quota per `CFS_PERIOD_US`, if capped.
    pub fn cfs_quota_us(&self) -> Option<u64> {
        self.cpu_limit
            .map(|l| (l.0.saturating_mul(CFS_PERIOD_US) / 1000).max(MIN_QUOTA_US))
    }

    /// v2 `cpu.max`: `"<quota> <period>"` or `"max <period>"`.
    pub fn cpu_max(&self) -> String {
        match self.cfs_quota_us() {
            Some(q) => format!("{q} {CFS_PERIOD_US}"),
            None => format!("max {CFS_PERIOD_US}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::wire::Capacity;

    fn spec(cpu: u64, memory: u64) -> AttemptSpec {
        AttemptSpec {
            resources: Capacity {
                cpu: MilliCpu(cpu),
                memory: Bytes(memory),
                disk: Bytes(0),
            },
            ..crate::test_spec::spec()
        }
    }

    #[test]
    fn memory_cap_is_the_request_unless_a_limit_is_given() {
        let mut s = spec(250, 64 << 20);
        assert_eq!(Limits::of(&s, 10).unwrap().memory, Bytes(64 << 20));
        s.memory_limit = Some(Bytes(128 << 20));
        let l = Limits::of(&s, 10).unwrap();
        assert_eq!(l.memory, Bytes(128 << 20));
        assert_eq!(l.pids, 10);
    }

    #[test]
    fn a_cap_too_small_to_run_is_refused() {
        let s = spec(250, 0);
        assert!(matches!(
            Limits::of(&s, 10),
            Err(IsolationError::MemoryTooSmall(Bytes(0)))
        ));
    }

    #[test]
    fn cpu_weights_follow_the_request() {
        let l = |cpu| Limits::of(&spec(cpu, 64 << 20), 1).unwrap();
        assert_eq!(l(1000).cpu_shares(), 1024);
        assert_eq!(l(250).cpu_shares(), 256);
        assert_eq!(l(1).cpu_shares(), 2, "the kernel minimum");
        // The kubelet's mapping: 1024 shares is weight 39, 2 shares weight 1.
        assert_eq!(l(1000).cpu_weight(), 39);
        assert_eq!(l(1).cpu_weight(), 1);
        assert!(l(10_000_000).cpu_weight() <= 10_000);
    }

    #[test]
    fn cpu_cap_is_a_quota_per_period() {
        let mut s = spec(250, 64 << 20);
        assert_eq!(Limits::of(&s, 1).unwrap().cfs_quota_us(), None);
        assert_eq!(Limits::of(&s, 1).unwrap().cpu_max(), "max 100000");
        s.cpu_limit = Some(MilliCpu(500));
        assert_eq!(Limits::of(&s, 1).unwrap().cfs_quota_us(), Some(50_000));
        assert_eq!(Limits::of(&s, 1).unwrap().cpu_max(), "50000 100000");
        s.cpu_limit = Some(MilliCpu(2500));
        assert_eq!(Limits::of(&s, 1).unwrap().cfs_quota_us(), Some(250_000));
        s.cpu_limit = Some(MilliCpu(1));
        assert_eq!(Limits::of(&s, 1).unwrap().cfs_quota_us(), Some(1_000));
    }
}

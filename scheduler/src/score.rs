//! How good a feasible machine is for one task. Higher is better.
//!
//! The default, `hybrid` (see `place`): among the feasible machines, one already
//! in use wins over an empty one (an empty machine is opened only when no used
//! one fits: the cell packs onto as few machines as best fit would), then the
//! one holding the fewest tasks of the task's job (one machine dying takes as
//! few of a job's tasks as it can), then the one left fullest after the
//! placement (best fit: the free fractions of cpu and memory left, summed,
//! lowest wins). Ties are broken by a hash of the task and machine ids: spread
//! like a random pick, yet the same snapshot always gives the same decisions.
//! A service's task ranks the fewest of its job's tasks before in use against
//! empty: its replicas spread over machines before they pack.
//!
//! `best-fit` and `worst-fit` (the most free capacity left wins) score without
//! the job spread; they are there to compare against (the trace replayer).

/// Which scoring the placement core uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scoring {
    #[default]
    Hybrid,
    BestFit,
    WorstFit,
}

impl Scoring {
    /// Whether a job's tasks already on a machine count against it.
    pub fn spreads_jobs(self) -> bool {
        self == Scoring::Hybrid
    }

    /// Score of a machine left with `free_after` of `capacity`.
    pub fn score(self, capacity: &Capacity, free_after: &Capacity) -> f64 {
        let free = free_fraction(capacity, free_after);
        match self {
            Scoring::WorstFit => free,
            Scoring::BestFit | Scoring::Hybrid => -free,
        }
    }
}

use borg_shared::wire::Capacity;

/// Sum of the free fractions of cpu and memory left on the machine after the task
/// is placed: 0.0 (full) to 2.0 (empty). Disk is left out on purpose: most tasks
/// ask for none, and a machine with disk would otherwise always outrank one without.
pub fn free_fraction(capacity: &Capacity, free_after: &Capacity) -> f64 {
    fraction(free_after.cpu.0, capacity.cpu.0) + fraction(free_after.memory.0, capacity.memory.0)
}

fn fraction(free: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        free as f64 / capacity as f64
    }
}

/// A deterministic stand-in for a random tie-break: a mix of the two ids.
pub fn tie_break(task: uuid::Uuid, machine: uuid::Uuid) -> u64 {
    let (t, m) = (task.as_u128(), machine.as_u128());
    let x = (t as u64)
        ^ ((t >> 64) as u64).rotate_left(17)
        ^ (m as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
        ^ ((m >> 64) as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    // splitmix64's finalizer
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::{Bytes, MilliCpu};

    fn cap(cpu: u64, mem: u64) -> Capacity {
        Capacity {
            cpu: MilliCpu(cpu),
            memory: Bytes(mem),
            disk: Bytes(0),
        }
    }

    #[test]
    fn best_fit_prefers_the_fuller_machine_worst_fit_the_emptier() {
        let capacity = cap(1000, 1000);
        let (emptier, fuller) = (cap(900, 900), cap(500, 900));
        assert!(
            Scoring::WorstFit.score(&capacity, &emptier)
                > Scoring::WorstFit.score(&capacity, &fuller)
        );
        assert!(
            Scoring::BestFit.score(&capacity, &fuller)
                > Scoring::BestFit.score(&capacity, &emptier)
        );
        assert!(
            Scoring::Hybrid.score(&capacity, &fuller) > Scoring::Hybrid.score(&capacity, &emptier)
        );
        assert_eq!(free_fraction(&capacity, &cap(1000, 1000)), 2.0);
    }

    #[test]
    fn normalised_across_machine_sizes() {
        // Half of a big machine left is as good as half of a small one.
        assert_eq!(
            free_fraction(&cap(64_000, 1 << 40), &cap(32_000, 1 << 39)),
            free_fraction(&cap(1000, 1 << 30), &cap(500, 1 << 29))
        );
    }

    #[test]
    fn zero_capacity_dimension_does_not_divide_by_zero() {
        assert_eq!(free_fraction(&cap(0, 1000), &cap(0, 500)), 0.5);
    }

    #[test]
    fn tie_break_spreads_and_is_stable() {
        let t = uuid::Uuid::from_u128(7);
        let a = tie_break(t, uuid::Uuid::from_u128(1));
        assert_eq!(a, tie_break(t, uuid::Uuid::from_u128(1)));
        assert_ne!(a, tie_break(t, uuid::Uuid::from_u128(2)));
    }
}

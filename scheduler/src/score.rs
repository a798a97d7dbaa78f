//! How good a feasible machine is for one task. Higher is better.
//!
//! We prefer the machine left with the most free capacity after the placement
//! (worst fit), normalised per dimension so a core and a gibibyte weigh the same
//! share of a machine. That spreads load, which keeps room for the next task and
//! limits the blast radius of one machine dying. Ties are broken by the caller
//! (machine name), so the score itself needs no tie-breaker.

use borg_shared::wire::Capacity;

/// Sum of the free fractions of cpu and memory left on the machine after the task
/// is placed: 0.0 (full) to 2.0 (empty). Disk is left out on purpose: most tasks
/// ask for none, and a machine with disk would otherwise always outrank one without.
pub fn score(capacity: &Capacity, free_after: &Capacity) -> f64 {
    fraction(free_after.cpu.0, capacity.cpu.0) + fraction(free_after.memory.0, capacity.memory.0)
}

fn fraction(free: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        free as f64 / capacity as f64
    }
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
    fn emptier_machine_scores_higher() {
        let capacity = cap(1000, 1000);
        assert!(score(&capacity, &cap(900, 900)) > score(&capacity, &cap(500, 900)));
        assert_eq!(score(&capacity, &cap(1000, 1000)), 2.0);
        assert_eq!(score(&capacity, &cap(0, 0)), 0.0);
    }

    #[test]
    fn normalised_across_machine_sizes() {
        // Half of a big machine left is as good as half of a small one.
        assert_eq!(
            score(&cap(64_000, 1 << 40), &cap(32_000, 1 << 39)),
            score(&cap(1000, 1 << 30), &cap(500, 1 << 29))
        );
    }

    #[test]
    fn zero_capacity_dimension_does_not_divide_by_zero() {
        assert_eq!(score(&cap(0, 1000), &cap(0, 500)), 0.5);
    }
}

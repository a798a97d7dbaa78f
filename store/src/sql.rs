//! State sets as SQL, spelled once. Each macro expands to a literal so that it
//! can be `concat!`ed into statement text at compile time; the tests check each
//! against the state machine in `borg_shared`.

/// Task/attempt states that hold a machine's capacity: placed and not finished.
#[macro_export]
macro_rules! live_attempt {
    () => {
        "('assigned', 'starting', 'running')"
    };
}

/// Job states of a job that is not finished.
#[macro_export]
macro_rules! live_job {
    () => {
        "('pending', 'running')"
    };
}

/// Sum of each live machine's attempt requests: `machine_id, cpu, memory, disk, n`.
/// The one definition of a machine's usage (listing, scheduler snapshot, commit re-check).
pub const USAGE_BY_MACHINE: &str = concat!(
    "SELECT machine_id, sum(cpu_milli)::bigint AS cpu, sum(memory)::bigint AS memory,
            sum(disk)::bigint AS disk, count(*) AS n
     FROM attempts WHERE state IN ",
    live_attempt!(),
    " GROUP BY machine_id"
);

/// The same, for a set of machines (`$1::uuid[]`).
pub const USAGE_OF_MACHINES: &str = concat!(
    "SELECT machine_id, sum(cpu_milli)::bigint AS cpu, sum(memory)::bigint AS memory,
            sum(disk)::bigint AS disk, count(*) AS n
     FROM attempts WHERE machine_id = ANY($1) AND state IN ",
    live_attempt!(),
    " GROUP BY machine_id"
);

#[cfg(test)]
mod tests {
    use borg_shared::{JobState, TaskState};

    fn set(states: impl Iterator<Item = &'static str>) -> String {
        let quoted: Vec<String> = states.map(|s| format!("'{s}'")).collect();
        format!("({})", quoted.join(", "))
    }

    #[test]
    fn live_sets_match_the_state_machine() {
        let live = TaskState::ALL
            .iter()
            .filter(|s| s.is_live_attempt())
            .map(|s| s.as_str());
        assert_eq!(live_attempt!(), set(live));
        let live_jobs = JobState::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.as_str());
        assert_eq!(live_job!(), set(live_jobs));
    }
}

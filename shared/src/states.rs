//! State enums and the one place task state may move.
//!
//! The enums map to Postgres enum types of the same name (see `migrations/`).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! pg_enum {
    ($(#[$doc:meta])* $name:ident, $pg:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[sqlx(type_name = $pg, rename_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{}` (one of: {})",
                        $pg,
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

pg_enum!(
    /// batch runs to completion; service is kept running.
    JobKind, "job_kind" { Batch => "batch", Service => "service" }
);

#[allow(clippy::derivable_impls)] // the enum comes from a macro that cannot carry #[default]
impl Default for JobKind {
    fn default() -> Self {
        JobKind::Batch
    }
}

pg_enum!(
    JobState, "job_state" {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Killed => "killed",
    }
);

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Killed
        )
    }
}

pg_enum!(
    /// A task's state is the state of its current attempt, or `pending` between attempts.
    TaskState, "task_state" {
        Pending => "pending",
        Assigned => "assigned",
        Starting => "starting",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Killed => "killed",
        Lost => "lost",
    }
);

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Killed | TaskState::Lost
        )
    }

    /// Placed on a machine and not yet finished: counts against that machine's capacity.
    pub fn is_live_attempt(self) -> bool {
        matches!(
            self,
            TaskState::Assigned | TaskState::Starting | TaskState::Running
        )
    }

    /// The only allowed moves. `lost` and `failed` tasks may go back to
    /// `pending` for a new attempt, and so may a `killed` one, which only a
    /// scale-up does (a service's index an earlier scale-down ended comes
    /// back); everything else moves forward.
    pub fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, Assigned | Killed)
                | (
                    Assigned,
                    Starting | Running | Succeeded | Failed | Killed | Lost
                )
                | (Starting, Running | Succeeded | Failed | Killed | Lost)
                | (Running, Succeeded | Failed | Killed | Lost)
                // Preempted: back to the queue once its attempt has stopped.
                | (Assigned | Starting | Running, Pending)
                | (Failed | Lost, Pending)
                | (Killed, Pending)
        )
    }
}

pg_enum!(
    MachineState, "machine_state" { Up => "up", Draining => "draining", Down => "down" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_do_not_move_forward() {
        for to in TaskState::ALL {
            assert!(!TaskState::Succeeded.can_move_to(*to), "succeeded -> {to}");
            // Killed only back to the queue (a scale-up over its index).
            assert_eq!(
                TaskState::Killed.can_move_to(*to),
                *to == TaskState::Pending,
                "killed -> {to}"
            );
        }
        assert!(TaskState::Failed.can_move_to(TaskState::Pending));
        assert!(!TaskState::Pending.can_move_to(TaskState::Running));
        assert!(TaskState::Assigned.can_move_to(TaskState::Starting));
    }

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(*s));
        }
        assert!("bogus".parse::<JobState>().is_err());
    }
}

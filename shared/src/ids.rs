//! Newtype ids so a task id can never be passed where a machine id is wanted.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
            utoipa::ToSchema,
        )]
        #[schema(value_type = String, format = Uuid)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUID v7: a millisecond timestamp, then
            /// random bits). Rows made one after another land side by side in
            /// the id's index instead of on a random page of it.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A job: one submission of a spec under a name.
    JobId
);
uuid_id!(
    /// One replica of a job (`job/index`).
    TaskId
);
uuid_id!(
    /// One placement of a task on a machine.
    AttemptId
);
uuid_id!(
    /// A registered machine (its borglet).
    MachineId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_one_after_another_are_v7_and_increase() {
        let ids: Vec<AttemptId> = (0..10_000).map(|_| AttemptId::new()).collect();
        assert!(ids.iter().all(|id| id.0.get_version_num() == 7));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids made in turn sort in turn"
        );
    }
}

//! Types every borg component shares: ids, resource units, the job spec with its
//! validation, the state enums, and the wire formats of the REST API and the
//! master→borglet sync protocol. A type lives here once and nowhere else.

pub mod agent;
pub mod auth;
pub mod error;
pub mod event_stream;
pub mod ids;
pub mod logging;
pub mod masters;
pub mod naming;
pub mod plan;
pub mod quota;
pub mod resources;
pub mod rollout;
pub mod spec;
pub mod states;
pub mod tls;
pub mod wire;

pub use error::{ApiError, ErrorBody};
pub use ids::{AttemptId, JobId, MachineId, TaskId};
pub use resources::{Bytes, MilliCpu};
pub use spec::{JobSpec, SpecError};
pub use states::{JobKind, JobState, MachineState, TaskState};

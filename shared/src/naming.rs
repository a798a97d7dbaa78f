//! `GET /v1/resolve/{job}`: where each running task of a job is (Borg's BNS).

use crate::ids::AttemptId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resolved {
    pub job: String,
    /// Running tasks only, by index.
    pub tasks: Vec<ResolvedTask>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolvedTask {
    pub index: i32,
    pub machine: String,
    /// The machine's host, as its borglet registered (the host of its address).
    pub host: String,
    pub attempt: AttemptId,
    /// The task's host ports (`BORG_PORT0`, ...), as `resources.ports` asked.
    pub ports: Vec<u16>,
}

//! `POST /v1/plan`: a dry run of a spec. Nothing is written; the answer says
//! whether it would be accepted, what would change, and where its tasks would
//! go now (or why they would wait, or whom they would preempt).

use serde::{Deserialize, Serialize};

/// What submitting (or applying) the spec now would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    /// No live job has this name: a new job.
    Create,
    /// The live job has exactly this spec: nothing changes.
    Unchanged,
    /// Only the replica count differs: the service scales.
    Scale,
    /// Only the update policy differs: kept, no task replaced.
    Policy,
    /// A new version of the live service, rolled out task by task.
    Update,
    /// Refused: a live batch job with another spec, or a field that stays for
    /// the job's life changed (`refusal` says which).
    Refused,
}

/// Where one task would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanOutcome {
    /// A machine has room now.
    Place,
    /// It would wait while lower-band tasks on `machine` are stopped for it.
    Preempt,
    /// It would wait: `reason` says why.
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedTask {
    pub index: i32,
    pub outcome: PlanOutcome,
    /// The machine it would run on (place) or make room on (preempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Host ports it would be given (place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// `JOB/INDEX` of the running tasks it would preempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preempts: Vec<String>,
    /// Why it would wait or preempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanView {
    pub job: String,
    /// Whether the master would take the spec (`action` is not `refused`).
    pub accepted: bool,
    pub action: PlanAction,
    /// Why it would be refused (`action: refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<crate::ApiError>,
    /// The live job's version (an existing job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i32>,
    /// The live job's spec against this one, as a unified diff of their YAML
    /// (an existing job whose spec differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The tasks that would need a machine: all of a new job or of a new
    /// version, the added ones of a scale up; none otherwise.
    pub tasks: Vec<PlannedTask>,
}

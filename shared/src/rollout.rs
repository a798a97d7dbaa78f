//! Rolling updates: the update policy's defaults, which spec changes an update
//! may make, and the wire form of `GET /v1/jobs/{name}/rollout`.

use crate::spec::{JobSpec, SpecError, UpdatePolicy};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Tasks of a job that may be down at once (rollout or drain) when the spec says nothing.
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 1;
/// How long a replaced task must run before the rollout takes its next step.
pub const DEFAULT_MIN_HEALTHY: Duration = Duration::from_secs(5);

impl UpdatePolicy {
    pub fn max_unavailable(&self) -> u32 {
        self.max_unavailable.unwrap_or(DEFAULT_MAX_UNAVAILABLE)
    }

    /// Superseded attempts of a job that may run at once beside their tasks'
    /// new ones (a surging rollout).
    pub fn max_surge(&self) -> u32 {
        self.max_surge.unwrap_or(0)
    }

    pub fn min_healthy(&self) -> Duration {
        self.min_healthy.unwrap_or(DEFAULT_MIN_HEALTHY)
    }
}

impl JobSpec {
    /// The update policy, with defaults for what the spec leaves out.
    pub fn update_policy(&self) -> UpdatePolicy {
        let p = self.update.clone().unwrap_or(UpdatePolicy {
            max_unavailable: None,
            max_surge: None,
            min_healthy: None,
        });
        UpdatePolicy {
            max_unavailable: Some(p.max_unavailable()),
            max_surge: Some(p.max_surge()),
            min_healthy: Some(p.min_healthy()),
        }
    }

    /// The same spec with another replica count.
    pub fn with_replicas(&self, replicas: i64) -> JobSpec {
        JobSpec {
            replicas,
            ..self.clone()
        }
    }
}

/// Why `new` may not replace the live `old` (a 422 naming the field), if it may not.
/// The name must match; the kind and the owner stay for a job's life (a batch
/// job's work is its tasks, and quota is accounted to the owner).
pub fn immutable_change(old: &JobSpec, new: &JobSpec) -> Option<SpecError> {
    let refuse = |field: &str, what: String| SpecError::Invalid {
        field: field.to_string(),
        message: format!("{what} cannot change on a live job: kill it and submit again"),
    };
    if old.name != new.name {
        return Some(SpecError::Invalid {
            field: "name".into(),
            message: format!(
                "the spec names `{}` but the request is for job `{}`",
                new.name, old.name
            ),
        });
    }
    if old.kind != new.kind {
        return Some(refuse(
            "kind",
            format!("kind ({} → {})", old.kind, new.kind),
        ));
    }
    if old.owner != new.owner {
        return Some(refuse(
            "owner",
            format!("owner ({} → {})", old.owner, new.owner),
        ));
    }
    None
}

/// Where a job's rollout stands. `paused` is a rolling (or rolling back)
/// rollout an operator paused. `aborted`: its job ended (killed, failed)
/// before the rollout finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Rolling,
    Paused,
    Done,
    RollingBack,
    RolledBack,
    Failed,
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Rolling => "rolling",
            RolloutState::Paused => "paused",
            RolloutState::Done => "done",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Failed => "failed",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Nothing more will happen without an operator.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            RolloutState::Done
                | RolloutState::RolledBack
                | RolloutState::Failed
                | RolloutState::Aborted
        )
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a rollout, as its event says it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutStep {
    pub time: DateTime<Utc>,
    pub reason: String,
}

/// `GET /v1/jobs/{name}/rollout`: the job's latest rollout and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub job: String,
    pub state: RolloutState,
    /// The version the job ran when this rollout started.
    pub from_version: i32,
    /// The version this rollout rolls out.
    pub to_version: i32,
    /// The version tasks are being moved to now (`to_version`, or the one a rollback returns to).
    pub target_version: i32,
    /// Tasks whose current attempt runs `target_version`.
    pub updated: i64,
    /// Of those, running for `min_healthy` already.
    pub ready: i64,
    /// The job's live tasks.
    pub total: i64,
    pub max_unavailable: u32,
    /// Superseded attempts that may run beside their tasks' new ones.
    #[serde(default)]
    pub max_surge: u32,
    /// Superseded attempts live now (old copies still running, or stopping,
    /// while their tasks' new attempts come up).
    #[serde(default)]
    pub surging: i64,
    /// Milliseconds a replaced task must run before the next step.
    pub min_healthy_ms: u64,
    /// Why it is in this state (what failed, who paused or undid it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The rollout's recent steps, oldest first.
    #[serde(default)]
    pub steps: Vec<RolloutStep>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> JobSpec {
        JobSpec::from_yaml(yaml).unwrap()
    }

    const WEB: &str = "name: web\nkind: service\nreplicas: 3\ntask: {command: [sleep, '100']}\n";

    #[test]
    fn defaults_fill_the_policy() {
        let p = spec(WEB).update_policy();
        assert_eq!(p.max_unavailable, Some(1));
        assert_eq!(p.max_surge, Some(0));
        assert_eq!(p.min_healthy, Some(Duration::from_secs(5)));
    }

    #[test]
    fn kind_owner_and_name_are_immutable() {
        let old = spec(WEB);
        let changed = |text: &str| {
            immutable_change(&old, &spec(text)).and_then(|e| e.field().map(String::from))
        };
        assert_eq!(changed(&WEB.replace("'100'", "'200'")), None);
        assert_eq!(changed(&WEB.replace("replicas: 3", "replicas: 5")), None);
        assert_eq!(
            changed(&WEB.replace("kind: service", "kind: batch")).as_deref(),
            Some("kind")
        );
        assert_eq!(
            changed(&format!("owner: bob\n{WEB}")).as_deref(),
            Some("owner")
        );
        assert_eq!(
            changed(&WEB.replace("name: web", "name: api")).as_deref(),
            Some("name")
        );
    }
}

//! `POST /v1/plan`: a dry run of a spec (`jobctl plan -f FILE`). The same
//! checks as a submit or an apply, then the scheduler's pure placement core
//! against the cell as Postgres holds it now. Nothing is written.

use super::body::JsonBytes;
use super::jobs::{given_owner, refuse_unbuilt};
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::State;
use axum::Json;
use borg_shared::plan::{PlanAction, PlanOutcome, PlanView, PlannedTask};
use borg_shared::rollout::immutable_change;
use borg_shared::wire::{Capacity, JobView};
use borg_shared::{ErrorBody, JobId, JobKind, JobSpec, SpecError, TaskId};
use borgscheduler::{Decision, PendingTask};
use std::collections::HashMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(plan))
}

/// Dry-run a job spec: would it be accepted, what would change, where would its tasks go.
///
/// Runs the checks of `POST /v1/jobs` (and of `PUT /v1/jobs/{name}` for a live
/// job of that name), then places the tasks that would need a machine (all of
/// a new job or a new version, the added ones of a scale up) with the
/// scheduler's placement core against the cell as it is now: on a machine,
/// preempting named lower-band tasks, or waiting (with the reason). Tasks
/// already pending ahead in the queue are not counted. Writes nothing.
#[utoipa::path(
    post,
    path = "/v1/plan",
    operation_id = "plan_job",
    tag = "jobs",
    request_body(
        content = JobSpec,
        content_type = "application/json",
        description = "The job spec, as for `POST /v1/jobs`"
    ),
    responses(
        (status = 200, description = "The plan: `accepted`, the `action` a submit or apply would take, the diff against a live job, and each task's placement", body = PlanView),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "The spec is invalid, as a submit would answer (`invalid_spec`, `field` names the field)", body = ErrorBody),
        (status = 429, description = "This caller submits or plans faster than the master's `--submit-rate` allows (one bucket for both); `Retry-After` says when to retry (`rate_limited`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn plan(
    State(state): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Json<PlanView>> {
    let mut spec = JobSpec::from_json(&body)?;
    match given_owner(&body) {
        None => spec.owner = caller.owner.clone(),
        Some(owner) if !caller.may_change(&owner) => {
            return Err(ApiError::Forbidden(format!(
                "token {} submits jobs as {}; only an admin submits for another owner ({owner})",
                caller.token, caller.owner
            )))
        }
        Some(_) => {}
    }
    refuse_unbuilt(&spec)?;
    let live = state
        .store
        .find_job(&spec.name)
        .await?
        .filter(|j| !j.state.is_terminal());
    // Another owner's live job is not shown (as a read answers 404), only that the name is taken.
    let visible = live.as_ref().filter(|j| caller.may_read(&j.owner));
    if let (Some(j), None) = (&live, visible) {
        if given_owner(&body).is_none() {
            spec.owner = caller.owner.clone();
        }
        let why = conflict(format!(
            "the name {} is taken by a live job; pick another name",
            j.name
        ));
        return Ok(Json(refused(&spec, None, why)));
    }
    // An apply of a live job keeps its owner when the spec names none.
    if let (Some(j), None) = (visible, given_owner(&body)) {
        spec.owner = j.owner.clone();
    }
    let (action, refusal) = classify(visible, &spec);
    if let Some(why) = refusal {
        return Ok(Json(refused(&spec, visible, why)));
    }
    let (indexes, replacing) = match (action, visible) {
        (PlanAction::Create, _) => ((0..spec.replicas).collect(), None),
        (PlanAction::Scale, Some(j)) => ((j.replicas..spec.replicas).collect(), None),
        (PlanAction::Update, Some(j)) => ((0..spec.replicas).collect(), Some(j.id)),
        _ => (Vec::new(), None),
    };
    let job_id = visible.map_or_else(JobId::new, |j| j.id);
    let tasks: Vec<PendingTask> = indexes
        .iter()
        .map(|&i| pending_task(&spec, job_id, i))
        .collect();
    let planned = if tasks.is_empty() {
        Vec::new()
    } else {
        let run = borgscheduler::dry_run(state.store.pool(), &tasks, replacing)
            .await
            .map_err(ApiError::Internal)?;
        planned_tasks(&tasks, &run)
    };
    Ok(Json(PlanView {
        job: spec.name.clone(),
        accepted: true,
        action,
        refusal: None,
        current_version: visible.map(|j| j.version),
        diff: visible.and_then(|j| diff(&j.spec, &spec, j.version)),
        tasks: planned,
    }))
}

/// Why a plan is refused, as the API's error body would say it.
type Refusal = borg_shared::ApiError;

fn conflict(message: String) -> Refusal {
    Refusal {
        code: "conflict".into(),
        message,
        field: None,
    }
}

fn refused(spec: &JobSpec, live: Option<&JobView>, why: Refusal) -> PlanView {
    PlanView {
        job: spec.name.clone(),
        accepted: false,
        action: PlanAction::Refused,
        refusal: Some(why),
        current_version: live.map(|j| j.version),
        diff: live.and_then(|j| diff(&j.spec, spec, j.version)),
        tasks: Vec::new(),
    }
}

/// What a submit (no live job) or an apply (a live one) of `spec` would do,
/// as `Store::update_job` decides it; a refusal says why.
pub fn classify(live: Option<&JobView>, spec: &JobSpec) -> (PlanAction, Option<Refusal>) {
    let Some(live) = live else {
        return (PlanAction::Create, None);
    };
    if live.spec == *spec {
        return (PlanAction::Unchanged, None);
    }
    if let Some(e) = immutable_change(&live.spec, spec) {
        let why = match e {
            SpecError::Invalid { field, message } => Refusal {
                code: "invalid_spec".into(),
                message,
                field: Some(field),
            },
            SpecError::Malformed { message } => Refusal {
                code: "malformed_json".into(),
                message,
                field: None,
            },
        };
        return (PlanAction::Refused, Some(why));
    }
    if live.kind == JobKind::Batch {
        let why = conflict(format!(
            "job {} is a {} batch job: a batch job is not updated in place; \
             kill it and submit the new spec (or wait for it to finish)",
            live.name, live.state
        ));
        return (PlanAction::Refused, Some(why));
    }
    let same_but_replicas = spec.with_replicas(live.replicas);
    if same_but_replicas == live.spec {
        return (PlanAction::Scale, None);
    }
    let same_but_policy = JobSpec {
        update: live.spec.update.clone(),
        ..same_but_replicas
    };
    if same_but_policy == live.spec {
        // A policy change with a new replica count is still a scale of the tasks.
        if spec.replicas != live.replicas {
            return (PlanAction::Scale, None);
        }
        return (PlanAction::Policy, None);
    }
    (PlanAction::Update, None)
}

/// The task `index` of `spec` as the scheduler would read it from the queue.
/// Its id is made from the index, so the same plan places the same way.
fn pending_task(spec: &JobSpec, job_id: JobId, index: i64) -> PendingTask {
    let res = &spec.task.resources;
    PendingTask {
        id: TaskId(uuid::Uuid::from_u128(index as u128 + 1)),
        job_id,
        priority: i32::try_from(spec.priority).unwrap_or(i32::MAX),
        created_at: chrono::Utc::now(),
        request: Capacity {
            cpu: res.cpu,
            memory: res.memory,
            disk: res.disk,
        },
        constraints: Arc::from(spec.constraints.clone()),
        spread: spec.spread.clone().map(Arc::new),
        ports: res.ports,
        owner: Arc::from(spec.owner.as_str()),
        name: format!("{}/{index}", spec.name),
        failed_on: None,
        service: spec.kind == borg_shared::JobKind::Service,
    }
}

fn planned_tasks(tasks: &[PendingTask], run: &borgscheduler::DryRun) -> Vec<PlannedTask> {
    let index: HashMap<TaskId, i32> = tasks
        .iter()
        .map(|t| {
            let i = t.name.rsplit_once('/').and_then(|(_, i)| i.parse().ok());
            (t.id, i.unwrap_or(-1))
        })
        .collect();
    let machine = |m: &borg_shared::MachineId| run.machines.get(m).cloned();
    let mut planned: Vec<PlannedTask> = run
        .decisions
        .iter()
        .map(|d| {
            let index = index.get(&d.task()).copied().unwrap_or(-1);
            match d {
                Decision::Place {
                    machine: m, ports, ..
                } => PlannedTask {
                    index,
                    outcome: PlanOutcome::Place,
                    machine: machine(m),
                    ports: ports.clone(),
                    preempts: Vec::new(),
                    reason: None,
                },
                Decision::Preempt {
                    machine: m,
                    victims,
                    reason,
                    ..
                } => PlannedTask {
                    index,
                    outcome: PlanOutcome::Preempt,
                    machine: machine(m),
                    ports: Vec::new(),
                    preempts: victims
                        .iter()
                        .map(|a| run.victims.get(a).cloned().unwrap_or_else(|| a.to_string()))
                        .collect(),
                    reason: Some(reason.clone()),
                },
                Decision::Unplaceable { reason, .. } => PlannedTask {
                    index,
                    outcome: PlanOutcome::Wait,
                    machine: None,
                    ports: Vec::new(),
                    preempts: Vec::new(),
                    reason: Some(reason.clone()),
                },
            }
        })
        .collect();
    planned.sort_by_key(|t| t.index);
    planned
}

/// The live spec against the new one, as a unified diff of their YAML; `None` if equal.
pub fn diff(live: &JobSpec, new: &JobSpec, version: i32) -> Option<String> {
    let old = serde_yaml_ng::to_string(live).ok()?;
    let new = serde_yaml_ng::to_string(new).ok()?;
    if old == new {
        return None;
    }
    let text = similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("live (version {version})"), "this spec")
        .to_string();
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> JobSpec {
        JobSpec::from_yaml(yaml).unwrap()
    }

    fn live(s: &JobSpec) -> JobView {
        let mut counts = std::collections::BTreeMap::new();
        counts.insert(borg_shared::TaskState::Running, s.replicas);
        JobView {
            id: JobId::new(),
            name: s.name.clone(),
            kind: s.kind,
            state: borg_shared::JobState::Running,
            owner: s.owner.clone(),
            priority: s.priority,
            replicas: s.replicas,
            version: 3,
            created_at: chrono::Utc::now(),
            finished_at: None,
            task_counts: counts,
            spec: s.clone(),
            tasks: None,
            tasks_next: None,
            events: None,
        }
    }

    const WEB: &str = "name: web\nkind: service\nreplicas: 2\ntask:\n  command: [sleep, '1000']\n";

    #[test]
    fn classify_follows_the_update_rules() {
        let base = spec(WEB);
        let j = live(&base);
        assert_eq!(classify(None, &base).0, PlanAction::Create);
        assert_eq!(classify(Some(&j), &base).0, PlanAction::Unchanged);
        assert_eq!(
            classify(Some(&j), &base.with_replicas(5)).0,
            PlanAction::Scale
        );
        let new_command = spec(&WEB.replace("'1000'", "'2000'"));
        assert_eq!(classify(Some(&j), &new_command).0, PlanAction::Update);
        let policy = spec(&format!("{WEB}update:\n  max_unavailable: 2\n"));
        assert_eq!(classify(Some(&j), &policy).0, PlanAction::Policy);
        let batch = spec(&WEB.replace("kind: service", "kind: batch"));
        let (action, why) = classify(Some(&j), &batch);
        assert_eq!(action, PlanAction::Refused);
        assert_eq!(why.unwrap().field.as_deref(), Some("kind"));
        let live_batch = live(&batch);
        let (action, why) = classify(Some(&live_batch), &batch.with_replicas(3));
        assert_eq!(action, PlanAction::Refused);
        assert_eq!(why.unwrap().code, "conflict");
    }

    #[test]
    fn diff_names_the_changed_lines_only() {
        let old = spec(WEB);
        let new = spec(&WEB.replace("'1000'", "'2000'"));
        let d = diff(&old, &new, 3).unwrap();
        assert!(
            d.starts_with("--- live (version 3)\n+++ this spec\n"),
            "{d}"
        );
        assert!(
            d.contains("\n-  - '1000'\n") || d.contains("\n-    - '1000'\n"),
            "{d}"
        );
        assert!(d.contains("'2000'"), "{d}");
        assert_eq!(diff(&old, &old, 3), None);
    }
}

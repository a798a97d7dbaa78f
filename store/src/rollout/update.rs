//! `PUT /v1/jobs/{name}`: a new spec for a live service. The same spec changes
//! nothing; a new replica count alone is a scale; a new update policy alone is
//! kept (how to roll is not what runs); anything else is a new version, which
//! becomes the job's target and starts a rollout.

use super::{lock_job, read_rollout, rollout_event, set_target, Phase};
use crate::error::{Result, StoreError};
use crate::scale::ScaleOutcome;
use crate::Store;
use borg_shared::rollout::immutable_change;
use borg_shared::wire::JobView;
use borg_shared::{JobKind, JobSpec, JobState, SpecError};
use sqlx::types::Json;

#[derive(Debug)]
pub enum UpdateOutcome {
    /// A new version, rolling out.
    Updated {
        job: Box<JobView>,
        version: i32,
    },
    /// Only the update policy changed: kept, nothing replaced.
    PolicyChanged(Box<JobView>),
    /// Only the replica count changed: scaled.
    Scaled(Box<JobView>),
    /// The live job already has this spec.
    Unchanged(Box<JobView>),
    NotFound,
    AlreadyFinished(JobState),
    /// A batch job's work is its tasks: it is not updated in place.
    Batch(Box<JobView>),
    /// A field that stays for the job's life changed.
    Immutable(SpecError),
    /// The scale part could not be done (see `ScaleOutcome::StillStopping`).
    StillStopping {
        first: i32,
    },
}

impl Store {
    /// Update a live service to `spec` (validated by the caller).
    pub async fn update_job(&self, spec: &JobSpec) -> Result<UpdateOutcome> {
        let Some(live) = self.find_job(&spec.name).await? else {
            return Ok(UpdateOutcome::NotFound);
        };
        if live.state.is_terminal() {
            return Ok(UpdateOutcome::AlreadyFinished(live.state));
        }
        if live.spec == *spec {
            return Ok(UpdateOutcome::Unchanged(Box::new(live)));
        }
        if let Some(e) = immutable_change(&live.spec, spec) {
            return Ok(UpdateOutcome::Immutable(e));
        }
        if live.kind == JobKind::Batch {
            return Ok(UpdateOutcome::Batch(Box::new(live)));
        }
        if spec.replicas != live.replicas {
            match self
                .scale_job(&spec.name, Some(&spec.owner), spec.replicas as i32)
                .await?
            {
                ScaleOutcome::Scaled(job) | ScaleOutcome::Unchanged(job) => {
                    if job.spec == *spec {
                        return Ok(UpdateOutcome::Scaled(job));
                    }
                }
                ScaleOutcome::NotFound => return Ok(UpdateOutcome::NotFound),
                ScaleOutcome::AlreadyFinished(s) => return Ok(UpdateOutcome::AlreadyFinished(s)),
                ScaleOutcome::NotAService => return Ok(UpdateOutcome::Batch(Box::new(live))),
                ScaleOutcome::StillStopping { first } => {
                    return Ok(UpdateOutcome::StillStopping { first })
                }
            }
        }
        self.new_version(spec, live.id).await
    }

    async fn new_version(&self, spec: &JobSpec, id: borg_shared::JobId) -> Result<UpdateOutcome> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        let Some(job) = lock_job(&mut tx, id).await? else {
            drop(tx);
            let state = self
                .find_job(&spec.name)
                .await?
                .map_or(JobState::Killed, |j| j.state);
            return Ok(UpdateOutcome::AlreadyFinished(state));
        };
        let existing = read_rollout(&mut tx, job.id, true).await?;
        let spec = spec.with_replicas(i64::from(job.replicas));
        if job.spec.0 == spec {
            // The same update raced this one and won.
            drop(tx);
            return self.view_as(&spec.name, UpdateOutcome::Unchanged).await;
        }
        let policy_only = JobSpec {
            update: spec.update.clone(),
            ..job.spec.0.clone()
        } == spec;
        if policy_only {
            // How to roll is not what runs: no new version, nothing replaced.
            sqlx::query("UPDATE jobs SET spec = $2, updated_at = now() WHERE id = $1")
                .bind(job.id)
                .bind(Json(&spec))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE job_versions SET spec = $3 WHERE job_id = $1 AND version = $2")
                .bind(job.id)
                .bind(job.version)
                .bind(Json(&spec))
                .execute(&mut *tx)
                .await?;
            let p = spec.update_policy();
            let reason = format!(
                "update policy of version {} changed: max_unavailable {}, max_surge {}, min_healthy {:?}",
                job.version,
                p.max_unavailable(),
                p.max_surge(),
                p.min_healthy()
            );
            rollout_event(&mut tx, &job, &reason).await?;
            tx.commit().await?;
            return self.view_as(&spec.name, UpdateOutcome::PolicyChanged).await;
        }
        let version: i32 = sqlx::query_scalar(
            "INSERT INTO job_versions (job_id, version, spec)
             SELECT $1, COALESCE(max(version), 0) + 1, $2 FROM job_versions WHERE job_id = $1
             RETURNING version",
        )
        .bind(job.id)
        .bind(Json(&spec))
        .fetch_one(&mut *tx)
        .await?;
        // Where a failure rolls back to: the last version a rollout completed
        // on, not a version still rolling out when this update came.
        let stable = match &existing {
            Some(r) if matches!(r.state, Phase::Rolling | Phase::RollingBack | Phase::Failed) => {
                r.stable_version
            }
            _ => job.version,
        };
        sqlx::query(
            "INSERT INTO rollouts (job_id, from_version, to_version, stable_version, state, paused,
                                   reason, started_at, phase_at, progress_at, ready, updated_at)
             VALUES ($1, $2, $3, $4, 'rolling', false, NULL, now(), now(), now(), 0, now())
             ON CONFLICT (job_id) DO UPDATE SET from_version = $2, to_version = $3,
                 stable_version = $4, state = 'rolling', paused = false, reason = NULL,
                 started_at = now(), phase_at = now(), progress_at = now(), ready = 0,
                 updated_at = now()",
        )
        .bind(job.id)
        .bind(job.version)
        .bind(version)
        .bind(stable)
        .execute(&mut *tx)
        .await?;
        set_target(&mut tx, &job, version).await?;
        let policy = spec.update_policy();
        let reason = format!(
            "updated to version {version} (from {}): rolling with max_unavailable {}, max_surge {}, \
             min_healthy {:?}",
            job.version,
            policy.max_unavailable(),
            policy.max_surge(),
            policy.min_healthy(),
        );
        rollout_event(&mut tx, &job, &reason).await?;
        tx.commit().await?;
        metrics::counter!("borg_job_updates_total").increment(1);
        let view = self
            .find_job(&spec.name)
            .await?
            .ok_or_else(|| StoreError::Vanished(format!("job {} vanished", spec.name)))?;
        Ok(UpdateOutcome::Updated {
            job: Box::new(view),
            version,
        })
    }

    async fn view_as(
        &self,
        name: &str,
        wrap: fn(Box<JobView>) -> UpdateOutcome,
    ) -> Result<UpdateOutcome> {
        let job = self
            .find_job(name)
            .await?
            .ok_or_else(|| StoreError::Vanished(format!("job {name} vanished")))?;
        Ok(wrap(Box::new(job)))
    }
}

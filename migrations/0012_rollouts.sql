-- Job versions and rolling updates (issue 9). Every spec a job has had is a
-- version; `jobs.spec` is the spec of `jobs.version`, the version the job's
-- tasks should run (the target). Each attempt records the version it runs, so a
-- stale copy is always recognizable. The replica count is not versioned: it is
-- the job's (`jobs.replicas`), changed by scaling, kept across versions.
CREATE TABLE job_versions (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version    integer NOT NULL CHECK (version >= 1),
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, version)
);

ALTER TABLE jobs ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE attempts ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);

INSERT INTO job_versions (job_id, version, spec, created_at)
SELECT id, 1, spec, created_at FROM jobs;

-- The latest rollout of each job (a new update replaces it; its steps stay in
-- the events). `stable_version` is the last version a rollout completed on (or
-- the first): where an automatic rollback or an undo goes.
CREATE TYPE rollout_state AS ENUM ('rolling', 'done', 'rolling_back', 'rolled_back', 'failed');
CREATE TABLE rollouts (
    job_id         uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    from_version   integer NOT NULL,
    to_version     integer NOT NULL,
    stable_version integer NOT NULL,
    state          rollout_state NOT NULL,
    -- Paused by an operator: the controller takes no step until resumed.
    paused         boolean NOT NULL DEFAULT false,
    -- Why it is in this state (what failed, who paused).
    reason         text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    -- When the current direction began (rolling, or rolling back): only
    -- attempts of the target version made since then count as its failures.
    phase_at       timestamptz NOT NULL DEFAULT now(),
    -- The last time a task became ready or was replaced, and how many were
    -- ready then: a rollout that makes no progress for too long fails.
    progress_at    timestamptz NOT NULL DEFAULT now(),
    ready          integer NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- What the leader's controller scans each step.
CREATE INDEX rollouts_active ON rollouts (job_id) WHERE state IN ('rolling', 'rolling_back');

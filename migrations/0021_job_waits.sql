-- Why a job's pending tasks wait, once per job (issue 10). The scheduler judged
-- a stuck job's tasks as one (they ask for the same on the same machines) but
-- wrote the reason into every task row: a first pass over 86,000 unplaceable
-- tasks spent 4 of its 5.6 s rewriting task rows (a new row version and three
-- index entries each). Now the job's reason is one row here, and a pending task
-- with no reason of its own shows its job's, once the scheduler has judged the
-- job since the task began to wait (`judged_at >= tasks.pending_since`). A task
-- keeps a reason of its own when it differs from its job's (or was set by a
-- move: "preempted by ...", "lost: ...").
CREATE TABLE job_waits (
    job_id    uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    reason    text NOT NULL,
    -- When `reason` last changed: a changed reason replaces it only after
    -- REASON_REFRESH (store::placements), so the text does not flap.
    reason_at timestamptz NOT NULL DEFAULT now(),
    -- When the scheduler last judged the job.
    judged_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

-- A task's reason as shown: its own, else (while it waits) its job's. The
-- two-argument form takes the job's row (NULL: none) from a join, so a page of
-- one job's tasks reads that row once; it has no sub-select and is inlined.
CREATE FUNCTION task_reason(t tasks, w job_waits) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(t.reason,
        CASE WHEN t.state = 'pending' AND w.judged_at >= t.pending_since THEN w.reason END)
$$;
CREATE FUNCTION task_reason(t tasks) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT task_reason(t, (SELECT w FROM job_waits w WHERE w.job_id = t.job_id))
$$;

-- It found the pending tasks without a reason, to give each its job's.
DROP INDEX tasks_pending_unexplained;

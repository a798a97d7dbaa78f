-- One state path: counters kept rather than recounted, one events table for
-- every kind of state change readable in a commit-safe order, and indexes for
-- every lookup the API makes.

-- Events: task, job and machine changes in one table. States are text because
-- each kind has its own state type; `kind` says which. No foreign keys: the
-- table is append-only history (it outlives machines), and a key check per row
-- on the hot path bought nothing.
CREATE TYPE event_kind AS ENUM ('task', 'job', 'machine');
ALTER TABLE events
    DROP CONSTRAINT events_job_id_fkey,
    DROP CONSTRAINT events_task_id_fkey,
    DROP CONSTRAINT events_attempt_id_fkey,
    DROP CONSTRAINT events_machine_id_fkey,
    ALTER COLUMN job_id DROP NOT NULL,
    ALTER COLUMN from_state TYPE text,
    ALTER COLUMN to_state TYPE text,
    ADD COLUMN kind event_kind NOT NULL DEFAULT 'task',
    -- The writing transaction. Ids are not commit-ordered; a reader that only
    -- reads events of transactions older than its snapshot's xmin (all of them
    -- finished) and resumes from (txid, id) never skips one that commits late.
    ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_stream ON events (txid, id);

-- Task counts per job and state. Sharded by machine so that reports from many
-- machines about one big job never queue on one row: a machine's moves touch
-- only its shard (1..16), moves with no machine shard 0; a job's count is the
-- sum of its shards.
CREATE TABLE job_counts (
    job_id    uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    shard     smallint NOT NULL,
    pending   integer NOT NULL DEFAULT 0,
    assigned  integer NOT NULL DEFAULT 0,
    starting  integer NOT NULL DEFAULT 0,
    running   integer NOT NULL DEFAULT 0,
    succeeded integer NOT NULL DEFAULT 0,
    failed    integer NOT NULL DEFAULT 0,
    killed    integer NOT NULL DEFAULT 0,
    lost      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, shard)
) WITH (fillfactor = 50);

INSERT INTO job_counts (job_id, shard, pending, assigned, starting, running, succeeded, failed, killed, lost)
SELECT job_id, 0,
       count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'assigned'),
       count(*) FILTER (WHERE state = 'starting'), count(*) FILTER (WHERE state = 'running'),
       count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed'),
       count(*) FILTER (WHERE state = 'killed'), count(*) FILTER (WHERE state = 'lost')
FROM tasks GROUP BY job_id;

-- tasks.attempt_id now always names the newest attempt (it is no longer
-- cleared on retry), so a task's latest attempt is one primary-key lookup.
UPDATE tasks t SET attempt_id = a.id
FROM (SELECT DISTINCT ON (task_id) task_id, id FROM attempts ORDER BY task_id, created_at DESC) a
WHERE a.task_id = t.id AND t.attempt_id IS NULL;

CREATE INDEX attempts_task ON attempts (task_id, created_at DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC);
CREATE INDEX jobs_state_created ON jobs (state, created_at DESC);

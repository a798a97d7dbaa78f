-- Lifecycle (issue 9): history retention and rollouts that end with their job.
--
-- The leader deletes finished jobs whose retention has passed, oldest first, in
-- small batches; this index finds them without reading the rest of history.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'killed');

-- A rollout whose job ended (killed, failed) before it finished: it no longer
-- reads `rolling`. (Not used in this migration's transaction, as Postgres asks.)
ALTER TYPE rollout_state ADD VALUE 'aborted';

-- Surging rollouts (`update.max_surge`, issue 9). A rollout may bring a task's
-- new attempt up before its old one stops: the old attempt is then
-- *superseded*: no longer the task's attempt (`tasks.attempt_id` no longer names
-- it), still live (it keeps its capacity and its place in its machine's desired
-- set) until the rollout stops it once the new one is ready, or makes it the
-- task's attempt again on a rollback. So a task has at most one live attempt
-- that is not superseded, whatever races happen.
ALTER TABLE attempts ADD COLUMN superseded boolean NOT NULL DEFAULT false;

DROP INDEX attempts_one_live_per_task;
CREATE UNIQUE INDEX attempts_one_live_per_task ON attempts (task_id)
    WHERE state IN ('assigned', 'starting', 'running') AND NOT superseded;
-- The live superseded attempts of a task (few, and only during a rollout).
CREATE INDEX attempts_live_superseded ON attempts (task_id)
    WHERE state IN ('assigned', 'starting', 'running') AND superseded;

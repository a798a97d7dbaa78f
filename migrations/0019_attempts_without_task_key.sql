-- The placement commit's cost per placement (issue 10): the foreign key
-- attempts.task_id → tasks ran one lookup of the task per attempt inserted, on
-- a row the same transaction has just claimed (locked) as pending. Attempts are
-- written only by that commit, and deleted only with their task: history
-- collection (store/src/history.rs) now deletes a task's attempts in the
-- statement that deletes the task.
ALTER TABLE attempts DROP CONSTRAINT attempts_task_id_fkey;

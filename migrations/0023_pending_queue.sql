-- The pending queue in a table of its own (issue 10). It was a partial index
-- on `tasks` (`WHERE state = 'pending'`), so every move out of `pending` (each
-- placement) changed a column that index names: Postgres then writes the new
-- task version wherever there is room, with a new entry in each of the task's
-- indexes (13.5 µs a task in a batch of 4,000). With no index naming a column a
-- move changes, and room left on each page (fillfactor 50), a move is a
-- heap-only update on the same page (2.7 µs); the queue row goes with a delete.
--
-- A row per pending task, keyed in queue order. The task moves keep it (a move
-- into `pending` adds the row, a move out deletes it: store::moves), the
-- trigger below adds the row of a task created pending, and a change of a
-- pending task's priority moves it (store::rollout). Readers join `tasks` and
-- keep only tasks still pending, so a row left behind is skipped, never wrong.
CREATE TABLE task_queue (
    priority   integer NOT NULL,
    created_at timestamptz NOT NULL,
    task_id    uuid NOT NULL
);
CREATE UNIQUE INDEX task_queue_order ON task_queue (priority DESC, created_at, task_id);
INSERT INTO task_queue (priority, created_at, task_id)
SELECT priority, created_at, id FROM tasks WHERE state = 'pending';
DROP INDEX tasks_pending;
-- New pages only; existing ones fill up as before.
ALTER TABLE tasks SET (fillfactor = 50);

-- Once per statement, for every way a task is created (submit, scale-up).
CREATE FUNCTION task_queue_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_queue (priority, created_at, task_id)
    SELECT priority, created_at, id FROM added WHERE state = 'pending';
    RETURN NULL;
END $$;
CREATE TRIGGER task_queue_added AFTER INSERT ON tasks REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION task_queue_added();

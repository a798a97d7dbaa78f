-- The pending queue's order as one ascending key (issue 10). It was
-- (priority DESC, created_at, task_id): a page's cursor after (p, c, t) is then
-- `priority < p OR (priority = p AND (created_at, task_id) > (c, t))`, which no
-- index condition expresses, so each page's scan began at the queue's head and
-- stepped over every entry the pass had already placed (dead until vacuumed);
-- late in a pass the planner gave up on the index and sorted the whole queue.
-- With `rank = -priority` the cursor is one row comparison,
-- `(rank, created_at, task_id) > (-p, c, t)`, where the index scan starts.
-- Priorities are 0–1000 (the spec's bounds), so the negation is exact.
DROP INDEX task_queue_order;
ALTER TABLE task_queue RENAME COLUMN priority TO rank;
UPDATE task_queue SET rank = -rank;
CREATE UNIQUE INDEX task_queue_order ON task_queue (rank, created_at, task_id);

CREATE OR REPLACE FUNCTION task_queue_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_queue (rank, created_at, task_id)
    SELECT -priority, created_at, id FROM added WHERE state = 'pending';
    RETURN NULL;
END $$;

-- Each pending queue row carries its job's part (issue 10): the job id's hash
-- modulo 64. Several schedulers split the queue by job (`scheduler::slice`);
-- a scheduler of S takes the parts with `part % S = its rank`. The split was
-- the hash of `tasks.job_id`, so each scheduler's walk of the queue's index
-- reached every other scheduler's tasks too (their task row by key, to read
-- the job) before leaving them: with two schedulers, their page reads touched
-- 2.4 times the buffers of one scheduler's for the same queue. With the part
-- on the queue row, the other schedulers' rows are left at the queue.
CREATE FUNCTION queue_part(job uuid) RETURNS smallint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ((hashtext(job::text)::bigint + 2147483648) % 64)::smallint $$;

ALTER TABLE task_queue ADD COLUMN part smallint;
UPDATE task_queue q SET part = queue_part(t.job_id) FROM tasks t WHERE t.id = q.task_id;
-- A row left behind by a task that is gone (readers skip it).
UPDATE task_queue SET part = 0 WHERE part IS NULL;
ALTER TABLE task_queue ALTER COLUMN part SET NOT NULL;

CREATE OR REPLACE FUNCTION task_queue_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_queue (rank, created_at, task_id, part)
    SELECT -priority, created_at, id, queue_part(job_id) FROM added WHERE state = 'pending';
    RETURN NULL;
END $$;

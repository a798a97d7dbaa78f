-- Scheduler throughput and its incremental snapshot (issue 10).
--
-- When a pending task began to wait, kept on the task: set when it is created
-- (the default) and whenever it moves back to `pending` (store::moves), so the
-- placement commit reads how long each task waited from the row it claims
-- instead of looking up the task's newest attempt. Read only while pending.
ALTER TABLE tasks ADD COLUMN pending_since timestamptz;
UPDATE tasks t SET pending_since = COALESCE(
    (SELECT a.finished_at FROM attempts a WHERE a.task_id = t.id ORDER BY a.created_at DESC LIMIT 1),
    t.created_at)
WHERE t.state = 'pending';
ALTER TABLE tasks ALTER COLUMN pending_since SET DEFAULT now();

-- The transaction that last changed what a scheduler reads of a machine (its
-- state, name, labels, capacity or port range; not `last_heard` nor its
-- reported usage, which change every poll). A scheduler keeps the machines in
-- memory and re-reads only those changed by transactions it may not have
-- seen: `sched_txid >= ` the xmin of its previous read (the attempts' side of a
-- machine's usage is found the same way from `events.txid`).
ALTER TABLE machines ADD COLUMN sched_txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE FUNCTION machines_sched_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.sched_txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER machines_sched_stamp BEFORE UPDATE ON machines FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.name IS DISTINCT FROM NEW.name
          OR OLD.labels IS DISTINCT FROM NEW.labels OR OLD.cpu_milli IS DISTINCT FROM NEW.cpu_milli
          OR OLD.memory IS DISTINCT FROM NEW.memory OR OLD.disk IS DISTINCT FROM NEW.disk
          OR OLD.port_first IS DISTINCT FROM NEW.port_first
          OR OLD.port_last IS DISTINCT FROM NEW.port_last)
    EXECUTE FUNCTION machines_sched_stamp();
CREATE INDEX machines_sched_txid ON machines (sched_txid);

-- Two key checks per placement that guard nothing the placement does not
-- already hold (each is a trigger's lookup and row lock per row; together
-- about a third of a batch's attempt insert and commit, measured): an
-- attempt's machine is locked and checked `up` by the commit that inserts it,
-- and machines are never deleted; `tasks.attempt_id` is set only by the move
-- that places the task, in the transaction that inserts that attempt, and
-- attempts are deleted only with their task (ON DELETE CASCADE from tasks,
-- kept). Both stay plain columns.
ALTER TABLE attempts DROP CONSTRAINT attempts_machine_id_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_attempt_fk;

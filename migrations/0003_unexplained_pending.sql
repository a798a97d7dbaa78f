-- Pending tasks not yet told why they wait, by job: the scheduler explains a
-- whole job at once (its tasks share one request), and this index keeps that
-- free when every task already has its reason.
CREATE INDEX tasks_pending_unexplained ON tasks (job_id) WHERE state = 'pending' AND reason IS NULL;

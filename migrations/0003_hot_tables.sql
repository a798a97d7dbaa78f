-- Pending tasks not yet told why they wait, by job: the scheduler explains a
-- whole job at once (its tasks share one request), and this index keeps that
-- free when every task already has its reason.
CREATE INDEX tasks_pending_unexplained ON tasks (job_id) WHERE state = 'pending' AND reason IS NULL;

-- The hot tables churn fast (a 10,000-task job rewrites 10,000 task rows a few
-- times and appends 50,000 events in seconds): vacuum and analyze them after a
-- small share of change, not the default 20% / 10%, so the pending queue's index
-- stays free of dead entries and plans see a big job's events as many.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE attempts SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE events SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE job_counts SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);

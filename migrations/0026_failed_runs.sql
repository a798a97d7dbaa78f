-- A task that failed and waits to run again (issue 8): where it failed and how
-- many runs in a row have failed. A service its borglet hands back (it kept
-- failing on that machine) went straight back to the same machine whenever
-- packing preferred it, after the job's constant backoff: a crash loop wrote
-- a new attempt and its events every ~16 s forever, on one machine.
-- `failed_on`: the scheduler tries every other machine the task fits before
-- it. `failed_runs`: the wait before the next run doubles with each failed run
-- in a row, up to 5 min; a run of 10 min or more starts the count again.
-- Neither column is indexed, so the task moves stay heap-only updates.
ALTER TABLE tasks ADD COLUMN failed_on uuid,
                  ADD COLUMN failed_runs integer NOT NULL DEFAULT 0;

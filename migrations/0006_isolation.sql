-- Isolation (issue 8): how each machine isolates its tasks and what they use,
-- and the death certificate of each attempt (DESIGN.md), kept with the attempt
-- so it outlives the machine.

ALTER TABLE machines
    ADD COLUMN isolation text CHECK (isolation IN ('v2', 'v1', 'none')),
    ADD COLUMN version text,
    -- What its attempts use together, as last reported (cpu as a rate in millicores).
    ADD COLUMN cpu_used_milli bigint,
    ADD COLUMN memory_used bigint,
    ADD COLUMN usage_at timestamptz;

ALTER TABLE attempts
    ADD COLUMN cause text CHECK (cause IN ('exited', 'signaled', 'oom-killed', 'killed', 'failed-to-start')),
    ADD COLUMN killed_by text,
    ADD COLUMN peak_memory bigint,
    ADD COLUMN stderr_tail text,
    -- Latest usage sample while it runs.
    ADD COLUMN cpu_used_milli bigint,
    ADD COLUMN memory_used bigint,
    ADD COLUMN usage_at timestamptz;

-- Health checks (issue 8): the current run's health as its borglet last
-- reported it (NULL: no health check, or no probe has decided yet), and why its
-- last probe failed while none has passed since. Each change of `healthy` is
-- also an event of the task (`running → running`, reason `healthy` or
-- `unhealthy: ...`).
ALTER TABLE attempts
    ADD COLUMN healthy boolean,
    ADD COLUMN health_message text;

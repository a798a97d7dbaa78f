-- In-place restarts (DESIGN.md): the borglet restarts a task's process itself,
-- same attempt, and reports how many times and how the run before the latest
-- restart ended. Each restart is also a run of the task (`tasks.runs`).
ALTER TABLE attempts
    ADD COLUMN restarts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_exit text;

-- The whole cell's state. Postgres is the single source of truth: every
-- other process holds only caches rebuilt from these tables.

CREATE TYPE job_kind AS ENUM ('batch', 'service');
CREATE TYPE job_state AS ENUM ('pending', 'running', 'succeeded', 'failed', 'killed');
CREATE TYPE task_state AS ENUM ('pending', 'assigned', 'starting', 'running', 'succeeded', 'failed', 'killed', 'lost');
CREATE TYPE machine_state AS ENUM ('up', 'draining', 'down');

CREATE TABLE machines (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    address     text NOT NULL,
    state       machine_state NOT NULL DEFAULT 'up',
    labels      jsonb NOT NULL DEFAULT '{}'::jsonb,
    cpu_milli   bigint NOT NULL CHECK (cpu_milli >= 0),
    memory      bigint NOT NULL CHECK (memory >= 0),
    disk        bigint NOT NULL CHECK (disk >= 0),
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_heard  timestamptz
);

CREATE TABLE jobs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    kind        job_kind NOT NULL,
    state       job_state NOT NULL DEFAULT 'pending',
    owner       text NOT NULL,
    priority    integer NOT NULL CHECK (priority BETWEEN 0 AND 1000),
    replicas    integer NOT NULL CHECK (replicas BETWEEN 1 AND 10000),
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- One live job per name; finished jobs keep their history under the same name.
CREATE UNIQUE INDEX jobs_live_name ON jobs (name) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_name ON jobs (name, created_at DESC);

CREATE TABLE tasks (
    id          uuid PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    index       integer NOT NULL CHECK (index >= 0),
    state       task_state NOT NULL DEFAULT 'pending',
    -- Requests copied from the spec so the scheduler reads plain columns.
    priority    integer NOT NULL,
    cpu_milli   bigint NOT NULL CHECK (cpu_milli >= 0),
    memory      bigint NOT NULL CHECK (memory >= 0),
    disk        bigint NOT NULL CHECK (disk >= 0),
    -- Why pending (from the scheduler) or why it ended.
    reason      text,
    -- The attempt now placed, if any.
    attempt_id  uuid,
    runs        integer NOT NULL DEFAULT 0,
    -- Retry backoff: the scheduler leaves the task alone until then.
    not_before  timestamptz,
    max_runs    integer NOT NULL CHECK (max_runs >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, index)
);
CREATE INDEX tasks_pending ON tasks (priority DESC, created_at, id) WHERE state = 'pending';

CREATE TABLE attempts (
    id          uuid PRIMARY KEY,
    task_id     uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    machine_id  uuid NOT NULL REFERENCES machines (id),
    state       task_state NOT NULL CHECK (state <> 'pending'),
    cpu_milli   bigint NOT NULL,
    memory      bigint NOT NULL,
    disk        bigint NOT NULL,
    -- Set when the master wants the attempt stopped (kill, lost machine, ...): who and why.
    stop_reason text,
    pid         integer,
    exit_code   integer,
    signal      integer,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
-- At most one live attempt per task, whatever races happen.
CREATE UNIQUE INDEX attempts_one_live_per_task ON attempts (task_id)
    WHERE state IN ('assigned', 'starting', 'running');
CREATE INDEX attempts_live_by_machine ON attempts (machine_id)
    WHERE state IN ('assigned', 'starting', 'running');

ALTER TABLE tasks ADD CONSTRAINT tasks_attempt_fk FOREIGN KEY (attempt_id) REFERENCES attempts (id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    time        timestamptz NOT NULL DEFAULT clock_timestamp(),
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    task_id     uuid REFERENCES tasks (id) ON DELETE CASCADE,
    attempt_id  uuid REFERENCES attempts (id) ON DELETE CASCADE,
    machine_id  uuid REFERENCES machines (id),
    from_state  task_state,
    to_state    task_state NOT NULL,
    reason      text
);
CREATE INDEX events_job ON events (job_id, id);

-- The leadership lease: one row. The master holding an unexpired lease leads:
-- it alone polls borglets and runs the controllers. Each takeover increments
-- `epoch`; a leader's writes lock this row FOR SHARE and check the epoch in the
-- same transaction, so a deposed leader (paused, partitioned) cannot write, and
-- a takeover waits for the writes in flight of the leader it replaces.
CREATE TABLE leader_lease (
    id          smallint PRIMARY KEY CHECK (id = 1),
    holder      text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch >= 1),
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

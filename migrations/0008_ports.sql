-- Host ports (issue 10): each machine offers a range, each attempt holds the
-- ports the scheduler picked from it. No two live attempts on one machine share
-- a port: the scheduler's commit re-checks that under the machine's row lock.
ALTER TABLE machines
    ADD COLUMN port_first integer NOT NULL DEFAULT 20000,
    ADD COLUMN port_last  integer NOT NULL DEFAULT 29999,
    ADD CONSTRAINT machines_port_range CHECK (port_first BETWEEN 1 AND 65535
                                              AND port_last BETWEEN port_first AND 65535);
ALTER TABLE attempts ADD COLUMN ports integer[] NOT NULL DEFAULT '{}';
-- The few live attempts that hold ports, by machine: what a scheduler reads.
CREATE INDEX attempts_live_ports ON attempts (machine_id)
    WHERE ports <> '{}' AND state IN ('assigned', 'starting', 'running');

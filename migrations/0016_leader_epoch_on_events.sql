-- Which leader wrote an event: every write made as leader checks the lease in
-- its own transaction (store::lease::check_epoch), and that check also sets the
-- transaction-local `borg.epoch`. Events inserted in such a transaction record
-- the epoch; events written outside leadership (API calls, the scheduler) keep
-- NULL. So "did a deposed leader write after its successor took over?" is a
-- query. The default is stable, not volatile: adding the column rewrites nothing.
ALTER TABLE events
    ADD COLUMN epoch bigint DEFAULT NULLIF(current_setting('borg.epoch', true), '')::bigint;

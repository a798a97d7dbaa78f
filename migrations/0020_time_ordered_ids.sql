-- The placement commit's cost per placement (issue 10): every id was a random
-- UUID v4, so each placement wrote its index entries (the attempt's key, its
-- task's live and history entries, the task's new row version in tasks_pkey)
-- on random pages, each a page read, a dirtied page and, after a checkpoint, a
-- full-page image in the WAL. Ids are now UUID v7 (RFC 9562): a millisecond
-- timestamp, then random bits. The store makes them in Rust (`Uuid::now_v7`)
-- and, for ids made inside a statement, with this function (PostgreSQL 15 has
-- none built in): gen_random_uuid's random bits under the Unix time in
-- milliseconds, with the version nibble turned from 4 (0100) into 7 (0111).
-- Ids already written keep their value; only new ones are ordered.
CREATE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                placing substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

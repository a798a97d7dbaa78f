-- Quota per owner and priority band (issue 10): how much cpu and memory the
-- owner's live attempts of the band may hold. No row, or a NULL column, is
-- unlimited. The scheduler's commit locks the rows it relies on, so two
-- schedulers cannot both admit past a quota.
CREATE TABLE quotas (
    owner      text NOT NULL,
    band       text NOT NULL CHECK (band IN ('production', 'batch')),
    cpu_milli  bigint CHECK (cpu_milli >= 0),
    memory     bigint CHECK (memory >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, band)
);
CREATE INDEX jobs_owner ON jobs (owner);

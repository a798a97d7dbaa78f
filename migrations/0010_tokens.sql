-- API identities (issue 11): bearer tokens, kept only as the SHA-256 of their
-- secret, each with a name, an owner and a role; and the audit log of every
-- mutating call. A token is never deleted, only revoked, so the audit log's
-- names stay unambiguous.
CREATE TABLE api_tokens (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    owner      text NOT NULL CHECK (length(owner) BETWEEN 1 AND 63),
    role       text NOT NULL CHECK (role IN ('admin', 'operator', 'user')),
    hash       bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Who did what, from where, when. Never a secret: the token's name, not its value.
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    token  text NOT NULL,
    owner  text NOT NULL,
    role   text NOT NULL,
    method text NOT NULL,
    path   text NOT NULL,
    target text,
    status smallint NOT NULL,
    peer   text
);

-- Agent trust: each machine's credential, kept only as its SHA-256 (hex). NULL
-- for a machine registered before credentials existed: it must register again
-- with the cluster's join token, from the address it has.
ALTER TABLE machines ADD COLUMN credential_hash text;

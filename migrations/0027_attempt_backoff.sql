-- An attempt whose process exited and that its borglet will start again in
-- place after a backoff (issue 8): its task shows `running/backoff` instead of
-- `running` (as the kubelet's CrashLoopBackOff), since the wait grows to 5 min.
-- Set while the borglet reports the attempt waiting, cleared when it reports it
-- running again. Not indexed: the write stays a heap-only update.
ALTER TABLE attempts ADD COLUMN in_backoff boolean NOT NULL DEFAULT false;

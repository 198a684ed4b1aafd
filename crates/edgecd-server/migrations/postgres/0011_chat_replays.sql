-- edgecd control plane: signatures of ChatOps requests (Slack, Teams) seen in the last few
-- minutes, so a replayed request is refused by every replica sharing the database.
CREATE TABLE chat_replays (
    key        TEXT PRIMARY KEY,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX chat_replays_expiry ON chat_replays(expires_ms);

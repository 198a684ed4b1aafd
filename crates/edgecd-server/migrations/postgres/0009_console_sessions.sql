-- edgecd control plane: web console sessions. A session is created by logging in with an API
-- token and stored as the SHA-256 of its random id (the cookie holds the id); it is bound to
-- the token's secret hash, so rotating or revoking the token ends it.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created    BIGINT NOT NULL,
    expires    BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions(expires);

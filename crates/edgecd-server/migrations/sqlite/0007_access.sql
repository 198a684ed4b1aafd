-- edgecd control plane: named API tokens with roles, and the audit log of people's requests.
-- A token is stored as the SHA-256 of its secret (shown once); revoked tokens stay listed.
CREATE TABLE api_tokens (
    name    TEXT PRIMARY KEY,
    role    TEXT NOT NULL,
    hash    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    rotated INTEGER,
    revoked INTEGER
);
-- One row per mutating admin request by an authenticated token (check-ins are not audited).
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         INTEGER NOT NULL,
    token         TEXT NOT NULL,
    role          TEXT NOT NULL,
    method        TEXT NOT NULL,
    route         TEXT NOT NULL,
    path          TEXT NOT NULL,
    status        INTEGER NOT NULL,
    peer          TEXT,
    forwarded_for TEXT,
    summary       TEXT
);
CREATE INDEX audit_log_at ON audit_log(at_ms);
CREATE INDEX audit_log_token ON audit_log(token, at_ms);

-- edgecd control plane: initial schema.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE trusted_keys (
    hint  TEXT PRIMARY KEY,
    name  TEXT,
    pem   TEXT NOT NULL,
    added INTEGER NOT NULL
);
CREATE TABLE releases (
    app       TEXT NOT NULL,
    version   TEXT NOT NULL,
    info      TEXT NOT NULL,
    published INTEGER NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE enroll_tokens (
    hash      TEXT PRIMARY KEY,
    labels    TEXT NOT NULL,
    expires   INTEGER NOT NULL,
    uses_left INTEGER NOT NULL
);
CREATE TABLE devices (
    id        TEXT PRIMARY KEY,
    cred_hash TEXT NOT NULL,
    labels    TEXT NOT NULL,
    enrolled  INTEGER NOT NULL,
    last_seen INTEGER,
    revoked   INTEGER NOT NULL DEFAULT 0,
    inventory TEXT,
    status    TEXT
);
CREATE TABLE assignments (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    version   INTEGER NOT NULL,
    app       TEXT NOT NULL,
    release_version TEXT NOT NULL,
    payload   TEXT NOT NULL,
    signature TEXT NOT NULL,
    expires   INTEGER NOT NULL,
    blobs     TEXT NOT NULL
);
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);

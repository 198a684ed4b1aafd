-- edgecd control plane: initial schema.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE trusted_keys (
    hint  TEXT PRIMARY KEY,
    name  TEXT,
    pem   TEXT NOT NULL,
    added BIGINT NOT NULL
);
CREATE TABLE releases (
    app       TEXT NOT NULL,
    version   TEXT NOT NULL,
    info      TEXT NOT NULL,
    published BIGINT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE enroll_tokens (
    hash      TEXT PRIMARY KEY,
    labels    TEXT NOT NULL,
    expires   BIGINT NOT NULL,
    uses_left BIGINT NOT NULL
);
CREATE TABLE devices (
    id        TEXT PRIMARY KEY,
    cred_hash TEXT NOT NULL,
    labels    TEXT NOT NULL,
    enrolled  BIGINT NOT NULL,
    last_seen BIGINT,
    revoked   BIGINT NOT NULL DEFAULT 0,
    inventory TEXT,
    status    TEXT
);
CREATE TABLE assignments (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    version   BIGINT NOT NULL,
    app       TEXT NOT NULL,
    release_version TEXT NOT NULL,
    payload   TEXT NOT NULL,
    signature TEXT NOT NULL,
    expires   BIGINT NOT NULL,
    blobs     TEXT NOT NULL
);
CREATE TABLE events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id TEXT,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);

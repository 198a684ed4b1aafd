-- edgecd control plane: progressive rollouts, their audit log, device metric aggregates.
CREATE TABLE rollouts (
    id       TEXT PRIMARY KEY,
    app      TEXT NOT NULL,
    state    TEXT NOT NULL,
    created  INTEGER NOT NULL,
    updated  INTEGER NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE rollout_audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX rollout_audit_by_rollout ON rollout_audit(rollout_id, id);
CREATE TABLE device_metrics (
    device_id TEXT NOT NULL,
    at        INTEGER NOT NULL,
    release   TEXT NOT NULL,
    agg       TEXT NOT NULL
);
CREATE INDEX device_metrics_by_time ON device_metrics(at);

-- edgecd control plane: progressive rollouts, their audit log, device metric aggregates.
CREATE TABLE rollouts (
    id       TEXT PRIMARY KEY,
    app      TEXT NOT NULL,
    state    TEXT NOT NULL,
    created  BIGINT NOT NULL,
    updated  BIGINT NOT NULL,
    finished BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE rollout_audit (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX rollout_audit_by_rollout ON rollout_audit(rollout_id, id);
CREATE TABLE device_metrics (
    device_id TEXT NOT NULL,
    at        BIGINT NOT NULL,
    release   TEXT NOT NULL,
    agg       TEXT NOT NULL
);
CREATE INDEX device_metrics_by_time ON device_metrics(at);

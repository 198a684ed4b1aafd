-- edgecd control plane: on-demand device logs and diagnoses (`edgecd device logs|diagnose`).
-- One row per device: the latest request (answered when answered_id = request_id) and the
-- latest report the device uploaded (DeviceReport JSON: redacted, bounded lines).
CREATE TABLE device_logs (
    device_id    TEXT PRIMARY KEY,
    request_id   TEXT NOT NULL,
    lines        BIGINT NOT NULL,
    diagnose     BOOLEAN NOT NULL,
    requested_at BIGINT NOT NULL,
    answered_id  TEXT,
    received_at  BIGINT,
    report       TEXT
);

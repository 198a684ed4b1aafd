-- Several apps per device: one assignment per (device, app). Versions still come from one
-- per-device counter (the highest version of any of the device's assignments, or its floor).
CREATE TABLE assignments_by_app (
    device_id TEXT NOT NULL REFERENCES devices(id),
    app       TEXT NOT NULL,
    version   INTEGER NOT NULL,
    release_version TEXT NOT NULL,
    payload   TEXT NOT NULL,
    signature TEXT NOT NULL,
    expires   INTEGER NOT NULL,
    blobs     TEXT NOT NULL,
    -- 1: a signed removal of the app (the agent stops it and deletes its slots).
    removed   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, app)
);
INSERT INTO assignments_by_app(device_id, app, version, release_version, payload, signature, expires, blobs)
    SELECT device_id, app, version, release_version, payload, signature, expires, blobs FROM assignments;
DROP TABLE assignments;
ALTER TABLE assignments_by_app RENAME TO assignments;

-- Several apps per device: one assignment per (device, app). Versions still come from one
-- per-device counter (the highest version of any of the device's assignments, or its floor).
ALTER TABLE assignments DROP CONSTRAINT assignments_pkey;
ALTER TABLE assignments ADD PRIMARY KEY (device_id, app);
-- 1: a signed removal of the app (the agent stops it and deletes its slots).
ALTER TABLE assignments ADD COLUMN removed INTEGER NOT NULL DEFAULT 0;

-- Several apps per device: one assignment per (device, app). Versions still come from one
-- per-device counter (the highest version of any of the device's assignments, or its floor).
ALTER TABLE assignments DROP CONSTRAINT assignments_pkey;
ALTER TABLE assignments ADD PRIMARY KEY (device_id, app);

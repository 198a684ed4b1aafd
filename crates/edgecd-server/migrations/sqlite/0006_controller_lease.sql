-- edgecd control plane: the lease that elects the one controller among server replicas.
-- The holder renews it every pass; another replica takes it once it has expired, with the
-- epoch raised, and every rollout state the controller saves is checked against it.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);

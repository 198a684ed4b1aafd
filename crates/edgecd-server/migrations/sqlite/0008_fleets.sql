-- edgecd control plane: fleets, the desired state the controller reconciles. `spec` is the
-- fleet as applied (JSON), `origin` says who wrote it (`apply`: a person's fleet file;
-- `deploy`: the fleet `edgecd deploy` writes), `state` what the reconciler keeps between
-- passes (JSON: the release it enforces per app, its rollout, the devices it placed or that
-- left it).
CREATE TABLE fleets (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    state      TEXT NOT NULL
);

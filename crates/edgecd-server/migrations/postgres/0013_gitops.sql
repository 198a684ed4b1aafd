-- edgecd control plane: the GitOps source (`gitops`), one row at most. `source` is what
-- `edgecd gitops --repo …` registered (JSON: repo URL, branch, path, poll interval, trusted
-- signers, webhook secret, status branch); `status` what the controller last saw and did
-- (JSON: commits seen and applied, the last refusal, the status push); `wake_ms` is when a
-- verified webhook last asked for a fetch (the leader compares it with its last fetch).
CREATE TABLE gitops (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    source  TEXT NOT NULL,
    status  TEXT NOT NULL,
    wake_ms BIGINT NOT NULL DEFAULT 0
);

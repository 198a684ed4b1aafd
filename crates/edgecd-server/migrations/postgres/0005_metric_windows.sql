-- edgecd control plane: each metric delta records when the period it covers began (the
-- device's previous check-in), so an analysis counts only samples taken inside its window.
ALTER TABLE device_metrics ADD COLUMN since BIGINT;
CREATE INDEX device_metrics_by_since ON device_metrics(since);

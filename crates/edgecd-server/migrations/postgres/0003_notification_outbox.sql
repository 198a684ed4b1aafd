-- edgecd control plane: the notification outbox. A rollout's notifications are inserted in
-- the transaction that saves the state they announce; the channel's delivery task marks each
-- row delivered or failed. Pending rows survive restarts and are re-queued on start.
-- Delivered and failed rows are kept 7 days (`finished`), then deleted.
CREATE TABLE notification_outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         TEXT NOT NULL,
    -- X-Edgecd-Delivery: the same on every attempt, across restarts.
    delivery_id     TEXT NOT NULL UNIQUE,
    -- The serialized notify::Notification (JSON).
    notification    TEXT NOT NULL,
    created         BIGINT NOT NULL,          -- unix seconds
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,          -- unix milliseconds
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    finished        BIGINT,                   -- unix seconds, once delivered or failed
    last_error      TEXT                       -- redacted: no URL path, no key
);
CREATE INDEX notification_outbox_pending ON notification_outbox(status, channel, id);
CREATE INDEX notification_outbox_finished ON notification_outbox(finished) WHERE finished IS NOT NULL;

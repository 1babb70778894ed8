-- Status changes waiting for their alerts.updated.<status> notification (PostgreSQL). Keep in
-- step with ../sqlite/0004_update_outbox.sql.
-- The api records a change and publishes it after the commit. When NATS is down, or the api
-- dies between the two, the change is recorded but not yet announced: it stays pending here
-- until a PubAck is back, and the api's relay publishes what is pending. Changes made before
-- this migration were announced (or are past saving): they are not pending.

ALTER TABLE alert_status_changes ADD COLUMN IF NOT EXISTS notify_pending BOOLEAN NOT NULL DEFAULT FALSE;
-- Only pending rows are indexed: the relay's scan costs what is pending, not the history.
CREATE INDEX IF NOT EXISTS alert_status_changes_notify_pending
    ON alert_status_changes (id) WHERE notify_pending;

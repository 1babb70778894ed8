-- Notifications (SQLite): routes to webhooks, Slack and e-mail, one delivery per alert message
-- and route, and every attempt at it. Keep in step with ../postgres/0009_notifications.sql.
-- A route matches alert messages (ALERTS stream) by severity, sensor, type and change; for each
-- message it matches, the alerter records one delivery (the pair is unique, so a redelivered
-- message never makes a second), then attempts it until a receiver accepts it or the retry
-- window ends. Each attempt is a row written before the attempt (`in_flight`) and completed
-- after it, so a crash mid-attempt is visible and the delivery is attempted again.
-- A webhook's secret signs its requests (HMAC), so it is kept as given, not hashed; the api
-- never returns it.

CREATE TABLE IF NOT EXISTS notification_routes (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN ('webhook', 'slack', 'email')),
    url                TEXT,
    to_addresses       TEXT    NOT NULL DEFAULT '[]',
    secret             TEXT,
    enabled            BOOLEAN NOT NULL DEFAULT TRUE,
    min_severity       INTEGER NOT NULL DEFAULT 1 CHECK (min_severity BETWEEN 1 AND 4),
    sources            TEXT    NOT NULL DEFAULT '[]',
    event_types        TEXT    NOT NULL DEFAULT '[]',
    on_changes         TEXT    NOT NULL DEFAULT '["created","severity_raised","reopened"]',
    repeat_every_secs  INTEGER,
    from_file          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS notification_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    route_id         INTEGER NOT NULL,
    alert_id         INTEGER,
    message_key      TEXT    NOT NULL,
    trigger_name     TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease            TEXT,
    lease_until      INTEGER,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    last_error       TEXT,
    UNIQUE (route_id, message_key)
);
CREATE INDEX IF NOT EXISTS notification_deliveries_due
    ON notification_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notification_deliveries_alert_id
    ON notification_deliveries (alert_id, route_id);

CREATE TABLE IF NOT EXISTS notification_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      INTEGER NOT NULL REFERENCES notification_deliveries (id),
    route_id         INTEGER NOT NULL,
    route_name       TEXT    NOT NULL,
    alert_id         INTEGER,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    outcome          TEXT    NOT NULL DEFAULT 'in_flight'
                     CHECK (outcome IN ('in_flight', 'delivered', 'retrying', 'failed', 'interrupted')),
    status_code      INTEGER,
    reply            TEXT,
    latency_us       INTEGER,
    error            TEXT,
    next_attempt_at  INTEGER
);
CREATE INDEX IF NOT EXISTS notification_attempts_alert_id
    ON notification_attempts (alert_id, id);
CREATE INDEX IF NOT EXISTS notification_attempts_delivery_id
    ON notification_attempts (delivery_id, id);

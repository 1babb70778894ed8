-- threatmon schema (SQLite). Keep in step with ../postgres/0001_init.sql: the same tables,
-- columns and indexes, so that one set of queries serves both backends.
-- Timestamps are microseconds since the Unix epoch (UTC); severity is its rank 1..4
-- (LOW..CRITICAL) so that it orders and range-filters.

CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The idempotency key: Nats-Msg-Id, else the body's uid, else the stream sequence.
    uid          TEXT    NOT NULL UNIQUE,
    source_name  TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    severity     INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    description  TEXT    NOT NULL,
    occurred_at  INTEGER,
    attributes   TEXT,
    created_at   INTEGER NOT NULL
);
-- Newest first is ORDER BY id DESC (ids grow with created_at); filters keep that order.
CREATE INDEX IF NOT EXISTS events_severity_id ON events (severity, id);
CREATE INDEX IF NOT EXISTS events_source_name_id ON events (source_name, id);
CREATE INDEX IF NOT EXISTS events_event_type_id ON events (event_type, id);
CREATE INDEX IF NOT EXISTS events_created_at ON events (created_at);

CREATE TABLE IF NOT EXISTS users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT    NOT NULL UNIQUE,
    email          TEXT    NOT NULL DEFAULT '',
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('ADMIN', 'ANALYST')),
    is_active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- One alert per event, however often the escalation is delivered.
    event_id     INTEGER NOT NULL UNIQUE REFERENCES events (id),
    -- Copied from the event so that list filters need no join.
    source_name  TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    severity     INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    status       TEXT    NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_status_id ON alerts (status, id);
CREATE INDEX IF NOT EXISTS alerts_severity_id ON alerts (severity, id);
CREATE INDEX IF NOT EXISTS alerts_status_severity_id ON alerts (status, severity, id);
CREATE INDEX IF NOT EXISTS alerts_event_type_id ON alerts (event_type, id);
CREATE INDEX IF NOT EXISTS alerts_source_name_id ON alerts (source_name, id);
CREATE INDEX IF NOT EXISTS alerts_created_at ON alerts (created_at);

-- Every status change of every alert: who, when, from, to. Creation is the first row
-- (from_status NULL, changed_by NULL for the pipeline).
CREATE TABLE IF NOT EXISTS alert_status_changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id     INTEGER NOT NULL REFERENCES alerts (id),
    from_status  TEXT    CHECK (from_status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    to_status    TEXT    NOT NULL CHECK (to_status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    changed_by   INTEGER REFERENCES users (id),
    note         TEXT,
    changed_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_status_changes_alert_id ON alert_status_changes (alert_id, id);

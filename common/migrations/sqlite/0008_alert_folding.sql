-- Alert triage (sqlite): folding repeats into one alert, owners and notes. Keep in step
-- with ../postgres/0008_alert_folding.sql.
-- An escalated event folds into the open alert of its fold key (ALERT_FOLD_KEY) instead of
-- opening its own. An alert keeps its first event (`event_id`) and gains how many events it
-- holds, the stored times of the first and last, the last event, the key's values (JSON) and a
-- `version` for optimistic concurrency; `close_reason` says how it was resolved, `assignee`
-- who owns it.
-- `alert_events` counts each escalated event in exactly one alert, once (its primary key), and
-- lists an alert's events; `open_folds` holds, per fold key (its hash), the alert that new
-- events of the key fold into, and its row is the lock two alerters folding the same key take
-- first. The history (alert_status_changes) gains a `reason` (the pipeline's own changes: a
-- rise in severity, a reopening), the severities, close reason and owners a change set, and the
-- note a row records.
-- Alerts made before this migration hold their one event.

ALTER TABLE alerts ADD COLUMN event_count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE alerts ADD COLUMN first_seen_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN last_event_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN fold_key TEXT;
ALTER TABLE alerts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE alerts ADD COLUMN close_reason TEXT
    CHECK (close_reason IN ('true_positive', 'false_positive', 'benign', 'duplicate', 'other'));
UPDATE alerts SET
    first_seen_at = (SELECT created_at FROM events WHERE events.id = alerts.event_id),
    last_seen_at = (SELECT created_at FROM events WHERE events.id = alerts.event_id),
    last_event_id = event_id;
ALTER TABLE alerts ADD COLUMN assignee INTEGER REFERENCES users (id);
CREATE INDEX IF NOT EXISTS alerts_assignee_id ON alerts (assignee, id);
CREATE INDEX IF NOT EXISTS alerts_last_seen_at_id ON alerts (last_seen_at, id);
CREATE INDEX IF NOT EXISTS alerts_event_count_id ON alerts (event_count, id);

CREATE TABLE IF NOT EXISTS alert_events (
    event_id  INTEGER NOT NULL PRIMARY KEY REFERENCES events (id),
    alert_id  INTEGER NOT NULL REFERENCES alerts (id)
);
CREATE INDEX IF NOT EXISTS alert_events_alert_id_event_id ON alert_events (alert_id, event_id);
INSERT INTO alert_events (event_id, alert_id) SELECT event_id, id FROM alerts;

CREATE TABLE IF NOT EXISTS open_folds (
    fold_hash  TEXT    NOT NULL PRIMARY KEY,
    alert_id   INTEGER REFERENCES alerts (id)
);

-- Notes on an alert (Admins write them, everyone reads them); each is in the history too.
CREATE TABLE IF NOT EXISTS alert_notes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    INTEGER NOT NULL REFERENCES alerts (id),
    author      INTEGER NOT NULL REFERENCES users (id),
    text        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notes_alert_id_id ON alert_notes (alert_id, id);

ALTER TABLE alert_status_changes ADD COLUMN reason TEXT;
ALTER TABLE alert_status_changes ADD COLUMN from_severity INTEGER CHECK (from_severity BETWEEN 1 AND 4);
ALTER TABLE alert_status_changes ADD COLUMN to_severity INTEGER CHECK (to_severity BETWEEN 1 AND 4);
ALTER TABLE alert_status_changes ADD COLUMN close_reason TEXT
    CHECK (close_reason IN ('true_positive', 'false_positive', 'benign', 'duplicate', 'other'));
ALTER TABLE alert_status_changes ADD COLUMN from_assignee INTEGER REFERENCES users (id);
ALTER TABLE alert_status_changes ADD COLUMN to_assignee INTEGER REFERENCES users (id);
ALTER TABLE alert_status_changes ADD COLUMN note_id INTEGER REFERENCES alert_notes (id);

-- Alert counts per hour of creation (hour = created_at / 3,600,000,000), kept like the other
-- counts tables (sharded, in the transaction that changes the alerts): what
-- /api/alerts/summary/ answers "the last 24 hours" from without reading the alerts.
CREATE TABLE IF NOT EXISTS alert_counts_by_hour (
    hour      INTEGER NOT NULL,
    status    TEXT    NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity  INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard     INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (hour, status, severity, shard)
);
INSERT INTO alert_counts_by_hour (hour, status, severity, shard, n)
    SELECT created_at / 3600000000, status, severity, 0, COUNT(*) FROM alerts
    GROUP BY created_at / 3600000000, status, severity;

CREATE TABLE IF NOT EXISTS alert_counts_by_hour_source (
    hour         INTEGER NOT NULL,
    source_name  TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    shard        INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (hour, source_name, status, shard)
);
INSERT INTO alert_counts_by_hour_source (hour, source_name, status, shard, n)
    SELECT created_at / 3600000000, source_name, status, 0, COUNT(*) FROM alerts
    GROUP BY created_at / 3600000000, source_name, status;

CREATE TABLE IF NOT EXISTS alert_counts_by_hour_type (
    hour        INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    shard       INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (hour, event_type, status, shard)
);
INSERT INTO alert_counts_by_hour_type (hour, event_type, status, shard, n)
    SELECT created_at / 3600000000, event_type, status, 0, COUNT(*) FROM alerts
    GROUP BY created_at / 3600000000, event_type, status;

-- Full-text search of alerts (q=): the sensor, the event type and the first event's
-- description, as words (runs of letters and digits, any case, accents kept: what the storage
-- reduces them and a query to, and what PostgreSQL's 'simple' tsvector of them holds). A
-- contentless FTS5 table keyed by the alert id (its rowid), written with the alert. The one
-- place the two schemas differ in shape: PostgreSQL keeps the words in alerts.search.
CREATE VIRTUAL TABLE IF NOT EXISTS alert_search USING fts5 (
    source_name, event_type, description, content = '', tokenize = 'unicode61 remove_diacritics 0'
);
INSERT INTO alert_search (rowid, source_name, event_type, description)
    SELECT alerts.id, alerts.source_name, alerts.event_type, events.description
    FROM alerts JOIN events ON events.id = alerts.event_id;

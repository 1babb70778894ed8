-- Exact row counts for list pages (PostgreSQL). Keep in step with ../sqlite/0003_counts.sql.
-- A page's "count" would otherwise be COUNT(*) over every matching row: with a million events
-- that is a scan per request. The storage keeps these tables in the same transaction as the
-- rows they count (store_events, create_alerts, change_alert_status), so a count answered
-- from them is exact. Filters on other columns (source, type, time) still count the rows.
-- Applying this migration counts the rows already stored.
-- Writers update these rows with one upsert per transaction, keys in sorted order, so that
-- concurrent writers take the row locks in the same order and cannot deadlock.

CREATE TABLE IF NOT EXISTS event_counts (
    severity  SMALLINT NOT NULL PRIMARY KEY CHECK (severity BETWEEN 1 AND 4),
    n         BIGINT   NOT NULL
);
INSERT INTO event_counts (severity, n)
    SELECT severity, COUNT(*) FROM events GROUP BY severity;

CREATE TABLE IF NOT EXISTS alert_counts (
    status    TEXT     NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity  SMALLINT NOT NULL CHECK (severity BETWEEN 1 AND 4),
    n         BIGINT   NOT NULL,
    PRIMARY KEY (status, severity)
);
INSERT INTO alert_counts (status, severity, n)
    SELECT status, severity, COUNT(*) FROM alerts GROUP BY status, severity;

-- Exact counts per event type and per sensor (postgres). Keep in step with
-- ../sqlite/0005_counts_by_type_and_source.sql.
-- As 0003_counts, for list pages filtered by eventType or sourceName (with or without status
-- and severity): without these, such a page's "count" walks every matching index entry, tens
-- of thousands for a common type. Kept in the same transaction as the rows they count, each
-- with one upsert of sorted keys, in the order event_counts, event_counts_by_type,
-- event_counts_by_source (alert_counts, alert_counts_by_type, alert_counts_by_source for
-- alerts), so concurrent writers lock count rows in one order. A filter on both the type and
-- the sensor, or on time, still counts the rows.
-- Applying this migration counts the rows already stored.

CREATE TABLE IF NOT EXISTS event_counts_by_type (
    event_type  TEXT     NOT NULL,
    severity    SMALLINT NOT NULL CHECK (severity BETWEEN 1 AND 4),
    n           BIGINT  NOT NULL,
    PRIMARY KEY (event_type, severity)
);
INSERT INTO event_counts_by_type (event_type, severity, n)
    SELECT event_type, severity, COUNT(*) FROM events GROUP BY event_type, severity;

CREATE TABLE IF NOT EXISTS event_counts_by_source (
    source_name TEXT     NOT NULL,
    severity    SMALLINT NOT NULL CHECK (severity BETWEEN 1 AND 4),
    n           BIGINT  NOT NULL,
    PRIMARY KEY (source_name, severity)
);
INSERT INTO event_counts_by_source (source_name, severity, n)
    SELECT source_name, severity, COUNT(*) FROM events GROUP BY source_name, severity;

CREATE TABLE IF NOT EXISTS alert_counts_by_type (
    event_type  TEXT     NOT NULL,
    status      TEXT     NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity    SMALLINT NOT NULL CHECK (severity BETWEEN 1 AND 4),
    n           BIGINT  NOT NULL,
    PRIMARY KEY (event_type, status, severity)
);
INSERT INTO alert_counts_by_type (event_type, status, severity, n)
    SELECT event_type, status, severity, COUNT(*) FROM alerts
    GROUP BY event_type, status, severity;

CREATE TABLE IF NOT EXISTS alert_counts_by_source (
    source_name TEXT     NOT NULL,
    status      TEXT     NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity    SMALLINT NOT NULL CHECK (severity BETWEEN 1 AND 4),
    n           BIGINT  NOT NULL,
    PRIMARY KEY (source_name, status, severity)
);
INSERT INTO alert_counts_by_source (source_name, status, severity, n)
    SELECT source_name, status, severity, COUNT(*) FROM alerts
    GROUP BY source_name, status, severity;

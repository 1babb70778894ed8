-- Count shards (SQLite). Keep in step with ../postgres/0007_count_shards.sql.
-- Every counts table (0003, 0005) gains a `shard` in its key, and a count is the sum of its
-- shards' rows (the storage always read SUM(n)). A writing transaction adds to the rows of
-- one shard that no other running transaction holds (PostgreSQL: a transaction-scoped
-- advisory lock per shard, tried without waiting), so concurrent writers never wait on each
-- other's count rows; before, every batch of every ingestor and alerter upserted the same
-- few hundred rows and held them locked until its commit, and concurrent writers queued
-- behind each other. SQLite has one writer at a time and always writes shard 0.
-- The counts so far become shard 0.

CREATE TABLE event_counts_sharded (
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (severity, shard)
);
INSERT INTO event_counts_sharded (severity, shard, n) SELECT severity, 0, n FROM event_counts;
DROP TABLE event_counts;
ALTER TABLE event_counts_sharded RENAME TO event_counts;

CREATE TABLE alert_counts_sharded (
    status TEXT NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (status, severity, shard)
);
INSERT INTO alert_counts_sharded (status, severity, shard, n) SELECT status, severity, 0, n FROM alert_counts;
DROP TABLE alert_counts;
ALTER TABLE alert_counts_sharded RENAME TO alert_counts;

CREATE TABLE event_counts_by_type_sharded (
    event_type TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (event_type, severity, shard)
);
INSERT INTO event_counts_by_type_sharded (event_type, severity, shard, n) SELECT event_type, severity, 0, n FROM event_counts_by_type;
DROP TABLE event_counts_by_type;
ALTER TABLE event_counts_by_type_sharded RENAME TO event_counts_by_type;

CREATE TABLE event_counts_by_source_sharded (
    source_name TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (source_name, severity, shard)
);
INSERT INTO event_counts_by_source_sharded (source_name, severity, shard, n) SELECT source_name, severity, 0, n FROM event_counts_by_source;
DROP TABLE event_counts_by_source;
ALTER TABLE event_counts_by_source_sharded RENAME TO event_counts_by_source;

CREATE TABLE alert_counts_by_type_sharded (
    event_type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (event_type, status, severity, shard)
);
INSERT INTO alert_counts_by_type_sharded (event_type, status, severity, shard, n) SELECT event_type, status, severity, 0, n FROM alert_counts_by_type;
DROP TABLE alert_counts_by_type;
ALTER TABLE alert_counts_by_type_sharded RENAME TO alert_counts_by_type;

CREATE TABLE alert_counts_by_source_sharded (
    source_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (source_name, status, severity, shard)
);
INSERT INTO alert_counts_by_source_sharded (source_name, status, severity, shard, n) SELECT source_name, status, severity, 0, n FROM alert_counts_by_source;
DROP TABLE alert_counts_by_source;
ALTER TABLE alert_counts_by_source_sharded RENAME TO alert_counts_by_source;

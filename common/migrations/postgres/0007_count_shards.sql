-- Count shards (PostgreSQL). Keep in step with ../sqlite/0007_count_shards.sql.
-- Every counts table (0003, 0005) gains a `shard` in its key, and a count is the sum of its
-- shards' rows (the storage always read SUM(n)). A writing transaction adds to the rows of
-- one shard that no other running transaction holds (PostgreSQL: a transaction-scoped
-- advisory lock per shard, tried without waiting), so concurrent writers never wait on each
-- other's count rows; before, every batch of every ingestor and alerter upserted the same
-- few hundred rows and held them locked until its commit, and concurrent writers queued
-- behind each other. SQLite has one writer at a time and always writes shard 0.
-- The counts so far become shard 0.

ALTER TABLE event_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE event_counts ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE event_counts DROP CONSTRAINT event_counts_pkey;
ALTER TABLE event_counts ADD PRIMARY KEY (severity, shard);

ALTER TABLE alert_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE alert_counts ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE alert_counts DROP CONSTRAINT alert_counts_pkey;
ALTER TABLE alert_counts ADD PRIMARY KEY (status, severity, shard);

ALTER TABLE event_counts_by_type ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE event_counts_by_type ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE event_counts_by_type DROP CONSTRAINT event_counts_by_type_pkey;
ALTER TABLE event_counts_by_type ADD PRIMARY KEY (event_type, severity, shard);

ALTER TABLE event_counts_by_source ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE event_counts_by_source ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE event_counts_by_source DROP CONSTRAINT event_counts_by_source_pkey;
ALTER TABLE event_counts_by_source ADD PRIMARY KEY (source_name, severity, shard);

ALTER TABLE alert_counts_by_type ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE alert_counts_by_type ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE alert_counts_by_type DROP CONSTRAINT alert_counts_by_type_pkey;
ALTER TABLE alert_counts_by_type ADD PRIMARY KEY (event_type, status, severity, shard);

ALTER TABLE alert_counts_by_source ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE alert_counts_by_source ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE alert_counts_by_source DROP CONSTRAINT alert_counts_by_source_pkey;
ALTER TABLE alert_counts_by_source ADD PRIMARY KEY (source_name, status, severity, shard);

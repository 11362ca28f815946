-- Tables of the stream processors (issue 5).
--
-- stream_errors: records the processors failed on through a fault of our own (not bad
-- input: that is quarantined). Keyed by the source record, so a replay collapses.
--
-- stream_ledger: one row per source record once every row it produced is inserted; the
-- worker writes it last in each flush. After a crash, records of uncommitted offsets that
-- are already in the ledger are skipped instead of processed again with a cold window, so
-- a replay can never route a record to a second table.

CREATE TABLE IF NOT EXISTS ${database}.stream_errors
(
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    event_id          Nullable(UUID),
    stage             LowCardinality(String),
    error_type        LowCardinality(String),
    message           String,
    failed_at         DateTime64(3, 'UTC'),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toDate(failed_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(failed_at) + INTERVAL ${quarantine_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS ${database}.stream_ledger
(
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    event_id          Nullable(UUID),
    outcome           LowCardinality(String),
    reason            LowCardinality(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(ingested_at) + INTERVAL ${quarantine_ttl_days} DAY;

-- Core tables of the warehouse. Every table that stream processors write is a
-- ReplacingMergeTree whose sorting key identifies the source record, so a replay after a
-- crash collapses into one row: query with FINAL (the views below do) for exact counts.

CREATE TABLE IF NOT EXISTS ${database}.chat_turns
(
    event_id          UUID,
    conversation_id   String,
    turn_index        UInt32,
    role              LowCardinality(String),
    text              String,
    model             LowCardinality(String),
    model_version     LowCardinality(String),
    latency_ms        Nullable(Float32),
    prompt_tokens     Nullable(UInt32),
    completion_tokens Nullable(UInt32),
    ts                DateTime64(3, 'UTC'),
    tenant            LowCardinality(String),
    user_id_hash      String,
    locale            LowCardinality(String),
    language          LowCardinality(String),
    topic             LowCardinality(String),
    toxicity          Float32,
    redactions        Map(LowCardinality(String), UInt16),
    metadata          Map(String, String),
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toDate(ts)
ORDER BY (tenant, conversation_id, turn_index, event_id)
TTL toDateTime(ts) + INTERVAL ${turns_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS ${database}.feedback
(
    event_id          UUID,
    conversation_id   String,
    turn_event_id     UUID,
    kind              LowCardinality(String),
    rating            Nullable(UInt8),
    correction        Nullable(String),
    flag_reasons      Array(LowCardinality(String)),
    comment           Nullable(String),
    negative          Bool,
    model_version     LowCardinality(String),
    tenant            LowCardinality(String),
    user_id_hash      String,
    ts                DateTime64(3, 'UTC'),
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toDate(ts)
ORDER BY (tenant, turn_event_id, event_id)
TTL toDateTime(ts) + INTERVAL ${turns_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS ${database}.training_examples
(
    example_id        UUID,
    conversation_id   String,
    turn_event_id     UUID,
    feedback_event_id Nullable(UUID),
    tenant            LowCardinality(String),
    topic             LowCardinality(String),
    language          LowCardinality(String),
    prompt            String,
    response          String,
    target            String,
    label             LowCardinality(String),
    feedback_kind     LowCardinality(String),
    rating            Nullable(UInt8),
    weight            Float32,
    model_version     LowCardinality(String),
    ts                DateTime64(3, 'UTC'),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toDate(ts)
ORDER BY (tenant, turn_event_id, example_id)
TTL toDateTime(ts) + INTERVAL ${turns_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS ${database}.quarantine
(
    record_id         UUID,
    event_id          Nullable(UUID),
    tenant            LowCardinality(String),
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    reasons           Array(LowCardinality(String)),
    primary_reason    LowCardinality(String),
    scores            Map(LowCardinality(String), Float32),
    detail            String,
    redacted_excerpt  String,
    quarantined_at    DateTime64(3, 'UTC'),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toDate(quarantined_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(quarantined_at) + INTERVAL ${quarantine_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS ${database}.model_versions
(
    model             LowCardinality(String),
    version           UInt32,
    adapter_id        String,
    base_model        String,
    adapter_uri       String,
    adapter_sha256    FixedString(64),
    previous_version  Nullable(UInt32),
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC'),
    train_rows        UInt64,
    validation_rows   UInt64,
    content_sha256    FixedString(64),
    dataset_query     String,
    kafka_offsets     String,
    metrics           Map(LowCardinality(String), Float64),
    status            LowCardinality(String),
    published_at      DateTime64(3, 'UTC'),
    updated_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (model, version);

CREATE TABLE IF NOT EXISTS ${database}.evaluations
(
    evaluation_id       UUID,
    model               LowCardinality(String),
    candidate_version   UInt32,
    baseline_version    Nullable(UInt32),
    window_start        DateTime64(3, 'UTC'),
    window_end          DateTime64(3, 'UTC'),
    perplexity_new      Float64,
    baseline_perplexity_new Nullable(Float64),
    perplexity_regression   Float64,
    baseline_perplexity_regression Nullable(Float64),
    bleu                Nullable(Float64),
    chrf                Nullable(Float64),
    toxicity_rate       Nullable(Float64),
    metrics             Map(LowCardinality(String), Float64),
    passed              Bool,
    reason              String,
    evaluated_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(evaluated_at)
ORDER BY (model, candidate_version, evaluation_id);

CREATE TABLE IF NOT EXISTS ${database}.alerts
(
    alert_id          UUID,
    name              LowCardinality(String),
    status            LowCardinality(String),
    severity          LowCardinality(String),
    summary           String,
    description       String,
    runbook_url       String,
    labels            Map(String, String),
    fingerprint       String,
    starts_at         DateTime64(3, 'UTC'),
    ends_at           Nullable(DateTime64(3, 'UTC')),
    received_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (fingerprint, starts_at, status)
TTL toDateTime(starts_at) + INTERVAL ${alerts_ttl_days} DAY;

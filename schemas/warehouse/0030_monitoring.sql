-- Monitoring (issue 8).
--
-- drift_evaluations: one row per detector per evaluation of `flywheel monitor run`, so
-- analysts can plot each statistic against its threshold over time. `statistic` is NaN
-- when a window held too few rows (`status = 'insufficient_data'`).
--
-- monitoring_actions: every automatic action (retrain request, rollback) that an alert
-- triggered or would have triggered, with whether the setting allowed it.

CREATE TABLE IF NOT EXISTS ${database}.drift_evaluations
(
    evaluation_id     UUID,
    evaluated_at      DateTime64(3, 'UTC'),
    detector          LowCardinality(String),
    tenant            LowCardinality(String),
    model_version     LowCardinality(String),
    statistic         Float64,
    threshold         Float64,
    p_value           Nullable(Float64),
    status            LowCardinality(String),
    n_reference       UInt32,
    n_current         UInt32,
    reference_source  LowCardinality(String),
    reference_start   DateTime64(3, 'UTC'),
    reference_end     DateTime64(3, 'UTC'),
    current_start     DateTime64(3, 'UTC'),
    current_end       DateTime64(3, 'UTC'),
    detail            String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(evaluated_at)
ORDER BY (detector, tenant, model_version, evaluated_at)
TTL toDateTime(evaluated_at) + INTERVAL ${alerts_ttl_days} DAY;

CREATE TABLE IF NOT EXISTS ${database}.monitoring_actions
(
    action_id         UUID,
    action            LowCardinality(String),
    performed         Bool,
    reason            String,
    alert_name        LowCardinality(String),
    fingerprint       String,
    model             LowCardinality(String),
    version           Nullable(UInt32),
    requested_at      DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(requested_at)
ORDER BY (action, requested_at)
TTL toDateTime(requested_at) + INTERVAL ${alerts_ttl_days} DAY;

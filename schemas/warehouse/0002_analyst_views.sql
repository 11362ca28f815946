-- Views analysts want on day one. Plain views over FINAL rather than materialized
-- aggregates: a replayed batch must never be counted twice, and FINAL collapses replays.

CREATE VIEW IF NOT EXISTS ${database}.volume_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    tenant,
    role,
    count() AS turns,
    uniqExact(conversation_id) AS conversations
FROM ${database}.chat_turns FINAL
GROUP BY hour, tenant, role;

CREATE VIEW IF NOT EXISTS ${database}.feedback_by_model_version AS
WITH answers AS
(
    SELECT model_version, tenant, count() AS answers
    FROM ${database}.chat_turns FINAL
    WHERE role = 'assistant'
    GROUP BY model_version, tenant
),
rated AS
(
    SELECT
        model_version,
        tenant,
        count() AS feedback,
        countIf(negative) AS negative_feedback,
        countIf(kind = 'thumbs_up') AS thumbs_up,
        countIf(kind = 'thumbs_down') AS thumbs_down,
        countIf(kind = 'correction') AS corrections,
        avgIf(rating, kind = 'rating') AS mean_rating
    FROM ${database}.feedback FINAL
    GROUP BY model_version, tenant
)
SELECT
    answers.model_version AS model_version,
    answers.tenant AS tenant,
    answers.answers AS answers,
    rated.feedback AS feedback,
    rated.negative_feedback AS negative_feedback,
    rated.thumbs_up AS thumbs_up,
    rated.thumbs_down AS thumbs_down,
    rated.corrections AS corrections,
    rated.mean_rating AS mean_rating,
    if(answers.answers = 0, 0, rated.feedback / answers.answers) AS feedback_rate,
    if(rated.feedback = 0, 0, rated.negative_feedback / rated.feedback) AS negative_rate
FROM answers
LEFT JOIN rated USING (model_version, tenant);

CREATE VIEW IF NOT EXISTS ${database}.quarantine_hourly AS
WITH quarantined AS
(
    SELECT toStartOfHour(quarantined_at) AS hour, primary_reason AS reason, count() AS records
    FROM ${database}.quarantine FINAL
    GROUP BY hour, reason
),
curated AS
(
    SELECT toStartOfHour(ts) AS hour, count() AS records
    FROM ${database}.chat_turns FINAL
    GROUP BY hour
),
totals AS
(
    SELECT hour, sum(records) AS records FROM
    (
        SELECT hour, records FROM curated
        UNION ALL
        SELECT hour, records FROM quarantined
    )
    GROUP BY hour
)
SELECT
    quarantined.hour AS hour,
    quarantined.reason AS reason,
    quarantined.records AS records,
    totals.records AS input_records,
    quarantined.records / totals.records AS rate
FROM quarantined
INNER JOIN totals USING (hour);

CREATE VIEW IF NOT EXISTS ${database}.latency_by_model_version AS
SELECT
    toStartOfHour(ts) AS hour,
    model_version,
    count() AS answers,
    quantileExact(0.5)(latency_ms) AS p50_ms,
    quantileExact(0.95)(latency_ms) AS p95_ms,
    quantileExact(0.99)(latency_ms) AS p99_ms
FROM ${database}.chat_turns FINAL
WHERE role = 'assistant' AND latency_ms IS NOT NULL
GROUP BY hour, model_version;

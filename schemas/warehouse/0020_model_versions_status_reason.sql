-- Why a version has its status (issue 17). The inference controller writes `refused`
-- with the reason (hash mismatch, unreadable or non-finite weights, failed load) when a
-- published version is not deployed; `published`, `serving` and the others leave it ''.
-- Owned by inference.serving_status, like the rest of model_versions.

ALTER TABLE ${database}.model_versions
    ADD COLUMN IF NOT EXISTS status_reason String DEFAULT '' AFTER status;

-- The stream ledger is written first in each flush (issue 5), which supersedes the note
-- in 0003_streams.sql (applied migrations are never edited).
--
-- stream_ledger: one row per source record with its outcome (curated, quarantined,
-- error), inserted before any other row the record produced. A worker that takes over a
-- partition after a crash reads the ledger from the committed offset on and gives each
-- replayed record its logged outcome, so a replay with a cold duplicate window or fresh
-- cap counters lands the same rows again and never a second table's row.

ALTER TABLE ${database}.stream_ledger MODIFY COMMENT
'One row per source record and its outcome, written before the record''s other rows; a replay after a crash follows it (streams.worker).';

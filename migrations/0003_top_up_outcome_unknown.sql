-- A top-up whose card may have been charged without the service knowing the outcome.
--
-- Set once any provider call for the attempt timed out, or ended without its answer being
-- recorded (the caller died: its lease ran out with the row still pending), and never
-- cleared while the row is pending. Such a row is re-driven by the sweep with its same
-- provider key until the provider gives a final answer, and is never closed as abandoned:
-- closing it would leave a possible charge uncredited and let the client's retry charge
-- again under a new key.
ALTER TABLE top_ups ADD COLUMN outcome_unknown boolean NOT NULL DEFAULT false;

-- Rows pending when this runs: only a manual attempt whose single call was refused by the
-- provider (attempts = 1, no re-drive scheduled, no lease) is known not to have charged.
-- Every other pending row is marked and scheduled for a re-drive with its key, which is
-- safe whatever happened before (the provider is idempotent by that key).
UPDATE top_ups SET outcome_unknown = true, retry_at = COALESCE(retry_at, now())
 WHERE status = 'pending' AND NOT (source = 'manual' AND attempts = 1 AND retry_at IS NULL AND lease_until IS NULL);

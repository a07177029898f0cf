-- Idempotency keys are scoped per tenant AND per side: the tenant's own API keys
-- ('tenant') apart from the platform's service and admin tokens ('platform'), so a tenant
-- can never occupy a key its platform's backends will use (see api.md, Idempotency).
--
-- Keys stored before this migration cannot say which side sent them. Each is kept on both
-- sides: a retry from either side replays it as it did before, nothing stored is lost, and
-- such keys age out with the usual purge (7 days).
ALTER TABLE idempotency_keys ADD COLUMN side text NOT NULL DEFAULT 'platform'
    CHECK (side IN ('tenant', 'platform'));
ALTER TABLE idempotency_keys ALTER COLUMN side DROP DEFAULT;
-- Still led by the key (see 0004): every lookup is exact whatever the statistics say.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (key, tenant_id, side);
INSERT INTO idempotency_keys (tenant_id, key, side, fingerprint, status, body, created_at)
    SELECT tenant_id, key, 'tenant', fingerprint, status, body, created_at FROM idempotency_keys;

-- A manual top-up remembers the side of its client's key: its outcome is stored there.
-- Rows from before: a top-up requested with a tenant's API key was on the tenant's side.
ALTER TABLE top_ups ADD COLUMN idempotency_side text CHECK (idempotency_side IN ('tenant', 'platform'));
UPDATE top_ups SET idempotency_side = CASE WHEN actor LIKE 'api_key:%' THEN 'tenant' ELSE 'platform' END
 WHERE idempotency_key IS NOT NULL;
ALTER TABLE top_ups ADD CONSTRAINT top_ups_key_has_side CHECK ((idempotency_key IS NULL) = (idempotency_side IS NULL));
DROP INDEX top_ups_pending_by_key;
CREATE UNIQUE INDEX top_ups_pending_by_key ON top_ups (tenant_id, idempotency_key, idempotency_side)
    WHERE status = 'pending' AND idempotency_key IS NOT NULL;

-- A manual attempt whose client did not come back (after the provider only answered
-- "unavailable") is handed over to the sweep, which re-drives it with its same provider
-- key until the provider gives a final answer. It is never closed without one: with a
-- real provider an unavailable answer (a 5xx) may hide a charge.
ALTER TABLE top_ups ADD COLUMN handed_over boolean NOT NULL DEFAULT false;

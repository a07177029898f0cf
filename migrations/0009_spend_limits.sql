-- Spend limits (issue 9): per API key and per tenant, in UTC calendar windows.
--
-- What a window has spent is kept in a counter row per (tenant, scope, window kind,
-- window start), written in the same transaction, under the tenant's ledger lock, as the
-- charge, hold, capture, release, expiry or refund that moves it: checking a limit reads
-- one row, never the history. Counters exist only for limits that exist; when a limit
-- starts counting (set, changed) its current window's counter is recounted from history,
-- under the same lock. Counter rows are never deleted.

-- A key's limit: both columns or neither. allowed_models NULL: every model.
ALTER TABLE api_keys
    ADD COLUMN spend_limit    numeric(20, 6) CHECK (spend_limit > 0),
    ADD COLUMN spend_window   text CHECK (spend_window IN ('day', 'week', 'month', 'lifetime')),
    ADD COLUMN allowed_models text[],
    ADD CONSTRAINT api_keys_spend_limit_whole CHECK ((spend_limit IS NULL) = (spend_window IS NULL));

-- A tenant's own limits (NULL: none for that window).
CREATE TABLE tenant_spend_limits (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id),
    day_limit   numeric(20, 6) CHECK (day_limit > 0),
    month_limit numeric(20, 6) CHECK (month_limit > 0),
    updated_at  timestamptz NOT NULL
);

-- scope: the API key's id, or the tenant's own id for the tenant's limits.
-- warned_limit / reached_limit: the limit value at which spend_limit.warning /
-- spend_limit.reached was sent in this window (each at most once per limit and window).
CREATE TABLE spend_counters (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    scope         uuid NOT NULL,
    window_kind   text NOT NULL CHECK (window_kind IN ('day', 'week', 'month', 'lifetime')),
    window_start  timestamptz NOT NULL,
    spent         numeric(20, 6) NOT NULL CHECK (spent >= 0),
    warned_limit  numeric(20, 6),
    reached_limit numeric(20, 6),
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, scope, window_kind, window_start)
);

ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN ('balance.low', 'balance.depleted',
    'top_up.succeeded', 'top_up.failed', 'auto_top_up.disabled', 'credits.expiring', 'credits.expired',
    'hold.expired', 'spend_limit.warning', 'spend_limit.reached'));

-- Money in: payment methods, top-ups (manual and automatic), the auto top-up settings,
-- the event outbox and webhook delivery.
--
-- As in 0001: every tenant-owned table has tenant_id first in its primary key, and money
-- is NUMERIC(20,6).

-- Money as the contract prints it: at least two decimals, no trailing zeros beyond them.
-- Used where an event payload is built inside SQL (the hot path's balance.low).
CREATE FUNCTION tally_money_text(numeric) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN scale(trim_scale($1)) < 2 THEN round($1, 2)::text ELSE trim_scale($1)::text END
$$;

-- One payment method per tenant: the provider's token and what to show of it.
CREATE TABLE payment_methods (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    token      text NOT NULL CHECK (length(token) BETWEEN 1 AND 255),
    brand      text NOT NULL,
    last4      text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);

-- A top-up is one payment attempt with one provider idempotency key, from `pending` to
-- `succeeded` or `failed` exactly once. The key is committed before the provider is called,
-- so a crash leaves a pending row that is re-driven with the same key.
CREATE TABLE top_ups (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    source           text NOT NULL CHECK (source IN ('manual', 'auto')),
    status           text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount           numeric(20, 6) NOT NULL CHECK (amount > 0),
    bonus_amount     numeric(20, 6) NOT NULL CHECK (bonus_amount >= 0),
    bonus_expires_at timestamptz,
    currency         text NOT NULL,
    -- The card charged, as it was when the attempt began: a re-drive charges the same one.
    payment_token    text NOT NULL,
    card_brand       text NOT NULL,
    card_last4       text NOT NULL,
    provider_key     text NOT NULL UNIQUE,
    provider_ref     text,
    error            text,
    -- Manual top-ups: the client's Idempotency-Key and request fingerprint, so that the
    -- outcome is stored under the key in the transaction that records it.
    idempotency_key  text,
    fingerprint      bytea,
    actor            text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    -- A provider call is (or may be) in progress until then: nobody else calls for this row.
    lease_until      timestamptz,
    -- When the sweep re-drives a pending row (NULL: only the client's retry does).
    retry_at         timestamptz,
    last_attempt_at  timestamptz,
    transaction_id   uuid,
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    CHECK ((status = 'pending') = (completed_at IS NULL)),
    CHECK (status <> 'succeeded' OR (provider_ref IS NOT NULL AND transaction_id IS NOT NULL)),
    CHECK ((idempotency_key IS NULL) = (fingerprint IS NULL))
);
-- At most one automatic attempt in flight per tenant, whatever the number of replicas.
CREATE UNIQUE INDEX top_ups_one_auto_in_flight ON top_ups (tenant_id) WHERE source = 'auto' AND status = 'pending';
-- A manual request's key names at most one pending attempt.
CREATE UNIQUE INDEX top_ups_pending_by_key ON top_ups (tenant_id, idempotency_key)
    WHERE status = 'pending' AND idempotency_key IS NOT NULL;
CREATE INDEX top_ups_due ON top_ups (retry_at) WHERE status = 'pending';
CREATE INDEX top_ups_auto_by_time ON top_ups (tenant_id, created_at) WHERE source = 'auto';

-- Auto top-up settings and state, one row per tenant that ever configured it.
CREATE TABLE auto_top_up (
    tenant_id            uuid NOT NULL REFERENCES tenants (id),
    enabled              boolean NOT NULL,
    threshold            numeric(20, 6) NOT NULL CHECK (threshold > 0),
    amount               numeric(20, 6) NOT NULL CHECK (amount > 0),
    monthly_limit        numeric(20, 6) CHECK (monthly_limit > 0),
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    disabled_reason      text,
    -- Back-off after a decline: no new attempt before this.
    next_attempt_at      timestamptz,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);
CREATE INDEX auto_top_up_enabled ON auto_top_up (tenant_id) WHERE enabled;

-- The transactional outbox: written in the transaction of the change it reports.
CREATE TABLE events (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    type       text NOT NULL CHECK (type IN ('balance.low', 'balance.depleted', 'top_up.succeeded', 'top_up.failed',
                   'auto_top_up.disabled', 'credits.expiring', 'credits.expired', 'hold.expired')),
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- One webhook endpoint per tenant. The secret is kept to sign with (it cannot be hashed).
CREATE TABLE webhook_endpoints (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    url        text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- NULL: every event type, present and future.
    events     text[],
    secret     text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);

-- One delivery per event for a tenant with an endpoint subscribed to its type, created in
-- the event's transaction. At least once: claimed by pushing next_attempt_at forward
-- (no lock held during the HTTP call), finished as delivered or failed.
CREATE TABLE webhook_deliveries (
    tenant_id       uuid NOT NULL,
    event_id        uuid NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_attempt_at timestamptz,
    last_status     smallint,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES events (tenant_id, id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Bonus lots already announced by a credits.expiring event (one notice per lot).
CREATE TABLE credit_expiry_notices (
    tenant_id  uuid NOT NULL,
    lot_id     uuid NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, lot_id),
    FOREIGN KEY (tenant_id, lot_id) REFERENCES bonus_lots (tenant_id, id)
);

-- Real card payments (Stripe) and money that comes back: top-up refunds and reversals.
--
-- As everywhere: tenant-owned tables carry tenant_id first in their primary key and in
-- every foreign key to tenant data; money is NUMERIC(20,6).

-- The ledger learns one kind: a top-up refund or reversal takes credit back out of the
-- tenant (paid → clearing, the top-up's own bonus lot → promotions).
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check CHECK (kind IN ('top_up', 'top_up_refund',
    'bonus', 'signup', 'gift', 'referral', 'compensation', 'adjustment', 'conversion', 'usage', 'hold', 'hold_release',
    'refund', 'expiry'));

-- Every event type of the contract (spend_limit.* included, so that this list is complete
-- whichever migration adding types runs last).
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN ('balance.low', 'balance.depleted',
    'top_up.succeeded', 'top_up.failed', 'auto_top_up.disabled', 'credits.expiring', 'credits.expired',
    'hold.expired', 'spend_limit.warning', 'spend_limit.reached', 'top_up.refunded', 'payment.reversed'));

-- Each tenant's customer at the provider (Stripe: a Customer), created once and kept: the
-- tenant's cards are attached to it, and a card attached to another customer is refused.
CREATE TABLE payment_customers (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    provider    text NOT NULL CHECK (provider IN ('mock', 'stripe')),
    customer_id text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);
CREATE UNIQUE INDEX payment_customers_by_id ON payment_customers (provider, customer_id);

-- The customer the card on file is attached to (NULL with the mock provider).
ALTER TABLE payment_methods ADD COLUMN customer_id text;

-- An attempt remembers the customer it charges, the provider's payment object once it
-- exists (a Stripe PaymentIntent, recorded and committed BEFORE it is confirmed, so a lost
-- answer is settled by retrieving it, never by creating a second one), the machine-readable
-- decline code, and the bonus lot its success granted (what a refund takes bonus back from).
ALTER TABLE top_ups ADD COLUMN provider_customer text;
ALTER TABLE top_ups ADD COLUMN provider_intent text;
ALTER TABLE top_ups ADD COLUMN decline_code text;
ALTER TABLE top_ups ADD COLUMN bonus_lot_id uuid;
-- Provider events about a payment name its PaymentIntent (disputes and refunds only that).
CREATE INDEX top_ups_by_intent ON top_ups (provider_intent) WHERE provider_intent IS NOT NULL;
CREATE INDEX top_ups_by_id ON top_ups (id);
-- Top-ups credited before this migration: their lot is the one their bonus transaction made.
UPDATE top_ups u SET bonus_lot_id = l.id
  FROM ledger_transactions t JOIN bonus_lots l ON l.tenant_id = t.tenant_id AND l.transaction_id = t.id
 WHERE u.status = 'succeeded' AND u.bonus_amount > 0 AND t.tenant_id = u.tenant_id AND t.kind = 'bonus'
   AND t.reference->>'top_up_id' = u.id::text;

-- Money that goes back: a refund asked for through Tally (kind 'refund', origin 'tally'), one
-- made at the provider (a dashboard refund: 'refund', 'provider'), or a dispute/chargeback
-- ('reversal', 'provider'). Like a top-up attempt, a refund through Tally is committed as
-- `pending` with its provider key before the provider is called, and re-driven with that
-- key until the provider gives a final answer.
--
-- `amount` is what goes back to the card; `bonus_share` the part of the top-up's bonus that
-- follows it (the same proportion, rounded so that shares of partial refunds add up to
-- exactly the bonus); clawed_* what was taken back out of the tenant, and `shortfall` what
-- could not be (already spent, or expired): amount + bonus_share = paid + bonus + shortfall.
-- Never more than the top-up in total: checked under the tenant's ledger lock.
CREATE TABLE top_up_refunds (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    top_up_id        uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('refund', 'reversal')),
    origin           text NOT NULL CHECK (origin IN ('tally', 'provider')),
    status           text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount           numeric(20, 6) NOT NULL CHECK (amount > 0),
    bonus_share      numeric(20, 6) NOT NULL CHECK (bonus_share >= 0),
    clawed_paid      numeric(20, 6) NOT NULL DEFAULT 0 CHECK (clawed_paid >= 0),
    clawed_bonus     numeric(20, 6) NOT NULL DEFAULT 0 CHECK (clawed_bonus >= 0),
    shortfall        numeric(20, 6) NOT NULL DEFAULT 0 CHECK (shortfall >= 0),
    currency         text NOT NULL,
    reason           text NOT NULL,
    provider_key     text NOT NULL UNIQUE,
    -- The provider's object: a refund (re_…) or a dispute (dp_…). One row per object.
    provider_ref     text,
    error            text,
    idempotency_key  text,
    idempotency_side text CHECK (idempotency_side IN ('tenant', 'platform')),
    fingerprint      bytea,
    actor            text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    lease_until      timestamptz,
    retry_at         timestamptz,
    outcome_unknown  boolean NOT NULL DEFAULT false,
    transaction_id   uuid,
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, top_up_id) REFERENCES top_ups (tenant_id, id),
    CHECK ((status = 'pending') = (completed_at IS NULL)),
    CHECK (status <> 'succeeded' OR amount + bonus_share = clawed_paid + clawed_bonus + shortfall),
    CHECK ((idempotency_key IS NULL) = (fingerprint IS NULL) AND (idempotency_key IS NULL) = (idempotency_side IS NULL))
);
CREATE INDEX top_up_refunds_by_top_up ON top_up_refunds (tenant_id, top_up_id);
CREATE UNIQUE INDEX top_up_refunds_by_provider_ref ON top_up_refunds (tenant_id, provider_ref)
    WHERE provider_ref IS NOT NULL;
CREATE UNIQUE INDEX top_up_refunds_pending_by_key ON top_up_refunds (tenant_id, idempotency_key, idempotency_side)
    WHERE status = 'pending' AND idempotency_key IS NOT NULL;
CREATE INDEX top_up_refunds_due ON top_up_refunds (retry_at) WHERE status = 'pending';

-- Provider webhook events already seen (Stripe retries and may send one event twice): a
-- duplicate is acknowledged and ignored. Every effect is idempotent on its own as well
-- (only a pending attempt is settled, one row per provider refund or dispute).
CREATE TABLE provider_events (
    provider    text NOT NULL,
    id          text NOT NULL,
    type        text NOT NULL,
    outcome     text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, id)
);

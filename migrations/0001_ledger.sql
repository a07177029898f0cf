-- Tally schema: tenants, the double-entry ledger, credentials, idempotency.
--
-- Every tenant-owned table carries tenant_id first in its primary key and in every
-- foreign key to tenant data, so the schema can be distributed by tenant (Citus).
-- Money is NUMERIC(20,6): micro-dollars, exact.

CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    external_ref text UNIQUE CHECK (length(external_ref) BETWEEN 1 AND 200),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at   timestamptz NOT NULL
);

-- Cached balances of a tenant's own accounts, one row per tenant. The CHECKs make an
-- overdraft impossible whatever the application does: the row is locked (FOR UPDATE)
-- by every posting, and a write that would go below zero fails the transaction.
CREATE TABLE balances (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
    currency  text NOT NULL,
    paid      numeric(20, 6) NOT NULL DEFAULT 0 CHECK (paid >= 0),
    bonus     numeric(20, 6) NOT NULL DEFAULT 0 CHECK (bonus >= 0),
    held      numeric(20, 6) NOT NULL DEFAULT 0 CHECK (held >= 0)
);

CREATE TABLE ledger_transactions (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('top_up', 'bonus', 'signup', 'gift', 'referral', 'compensation',
                    'adjustment', 'conversion', 'usage', 'hold', 'hold_release', 'refund', 'expiry')),
    description text,
    reference   jsonb NOT NULL DEFAULT '{}',
    actor       text,
    corrects    uuid,
    api_key_id  uuid,
    -- The tenant's total (paid + bonus + held) right after this transaction.
    total_after numeric(20, 6) NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, corrects) REFERENCES ledger_transactions (tenant_id, id)
);
CREATE INDEX ledger_transactions_kind ON ledger_transactions (tenant_id, kind, id);

-- Signed amounts: a credit to an account is positive. Each transaction's entries sum to zero.
CREATE TABLE ledger_entries (
    tenant_id      uuid NOT NULL,
    transaction_id uuid NOT NULL,
    line           smallint NOT NULL,
    account        text NOT NULL CHECK (account IN ('paid', 'bonus', 'held', 'clearing', 'revenue',
                       'promotions', 'expired', 'adjustments', 'conversion')),
    amount         numeric(20, 6) NOT NULL CHECK (amount <> 0),
    lot_id         uuid,
    PRIMARY KEY (tenant_id, transaction_id, line),
    FOREIGN KEY (tenant_id, transaction_id) REFERENCES ledger_transactions (tenant_id, id),
    CHECK ((account = 'bonus') = (lot_id IS NOT NULL))
);

-- Bonus credit in lots: spending order, refunds to the right lot and expiry are exact.
-- sum(remaining) over a tenant's lots equals balances.bonus.
CREATE TABLE bonus_lots (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    source         text NOT NULL,
    granted        numeric(20, 6) NOT NULL CHECK (granted > 0),
    remaining      numeric(20, 6) NOT NULL CHECK (remaining >= 0 AND remaining <= granted),
    expires_at     timestamptz,
    transaction_id uuid NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX bonus_lots_spendable ON bonus_lots (tenant_id, expires_at) WHERE remaining > 0;
CREATE INDEX bonus_lots_expiring ON bonus_lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

-- The ledger is append-only: corrections are new transactions.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only (% on %)', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

CREATE TABLE api_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    status       text NOT NULL CHECK (status IN ('enabled', 'disabled')),
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE service_tokens (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- A stored key is written in the same transaction as the effect it protects.
CREATE TABLE idempotency_keys (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    status      smallint NOT NULL,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

CREATE TABLE price_rules (
    model      text NOT NULL CHECK (length(model) BETWEEN 1 AND 128),
    version    integer NOT NULL CHECK (version > 0),
    rule       jsonb NOT NULL,
    -- 'book': seeded from the price-book file; 'admin': PUT by an operator.
    source     text NOT NULL CHECK (source IN ('book', 'admin')),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (model, version)
);

CREATE TABLE tenant_pricing (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id),
    deal       jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE charges (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    transaction_id uuid NOT NULL,
    amount         numeric(20, 6) NOT NULL CHECK (amount > 0),
    funded_bonus   numeric(20, 6) NOT NULL CHECK (funded_bonus >= 0),
    funded_paid    numeric(20, 6) NOT NULL CHECK (funded_paid >= 0),
    -- Which lots paid for it: [{"lot": uuid, "amount": "1.50"}], for refunds to the right lot.
    lots           jsonb NOT NULL,
    model          text,
    price_version  integer,
    usage          jsonb,
    description    text,
    metadata       jsonb,
    api_key_id     uuid,
    hold_id        uuid,
    -- The tenant's balance right after the charge, as its response reported it.
    total_after     numeric(20, 6) NOT NULL,
    available_after numeric(20, 6) NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (amount = funded_bonus + funded_paid)
);
CREATE INDEX charges_by_id ON charges (id);
CREATE INDEX charges_by_time ON charges (tenant_id, created_at);
CREATE INDEX charges_by_key ON charges (tenant_id, api_key_id) WHERE api_key_id IS NOT NULL;

CREATE TABLE refunds (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    charge_id      uuid NOT NULL,
    transaction_id uuid NOT NULL,
    amount         numeric(20, 6) NOT NULL CHECK (amount > 0),
    to_bonus       numeric(20, 6) NOT NULL,
    to_paid        numeric(20, 6) NOT NULL,
    lots           jsonb NOT NULL,
    reason         text NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, charge_id) REFERENCES charges (tenant_id, id)
);
CREATE INDEX refunds_by_charge ON refunds (tenant_id, charge_id);

CREATE TABLE holds (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    amount         numeric(20, 6) NOT NULL CHECK (amount > 0),
    funded_bonus   numeric(20, 6) NOT NULL,
    funded_paid    numeric(20, 6) NOT NULL,
    lots           jsonb NOT NULL,
    status         text NOT NULL CHECK (status IN ('active', 'captured', 'released', 'expired')),
    model          text,
    price_version  integer,
    usage          jsonb,
    description    text,
    api_key_id     uuid,
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL,
    resolved_at    timestamptz,
    charge_id      uuid,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX holds_by_id ON holds (id);
CREATE INDEX holds_expiring ON holds (expires_at) WHERE status = 'active';

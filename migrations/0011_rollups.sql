-- Per-tenant rollups (issue 14): the breakdown, the usage views and the runway read
-- whole days from these rows and only the partial edge days of a window from the raw
-- rows, so they cost the same at a million transactions as at a thousand.
--
-- Rollup rows are derived counters, never the truth: each is reproducible from the
-- ledger rows (the *_expected views below say how, and the admin ledger check compares
-- them). They are kept current in the same transaction as the rows they count, by
-- statement-level AFTER INSERT triggers that do one grouped upsert per statement, so a
-- batch of postings costs one upsert whatever its size. Rows are per tenant (tenant_id
-- first in the primary key), and a tenant's rows are only written under that tenant's
-- ledger lock, so lanes batching different tenants never touch the same row.
--
-- "Day" is the UTC calendar day of created_at, as the usage view has always printed it.
-- Counters are unconstrained NUMERIC: a lifetime sum may exceed what one amount can be.

-- Money that crossed between the tenant's own accounts (paid, bonus, held) and the system
-- side, per day and transaction kind. Each transaction counts by its net over the tenant's
-- accounts: a positive net is credited, a negative one debited (zero: a hold or a release,
-- nothing crossed, no row). A transaction's entries are inserted by one statement (the
-- ledger's posting), so the trigger sees each transaction whole.
CREATE TABLE flow_rollups (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    day       date NOT NULL,
    kind      text NOT NULL,
    credited  numeric NOT NULL,
    debited   numeric NOT NULL,
    PRIMARY KEY (tenant_id, day, kind)
);

-- Net usage per day, and per model or per API key (`dim`): charges (and captures, which
-- are charges) count positive on their day, refunds negative on the refund's day under the
-- charge's model and key. Each charge is counted once in each dimension, so a day's usage
-- is the sum of its 'model' rows; two narrow dimensions instead of one (model x key) cube
-- keep a tenant's rows few (days x models + days x keys) whatever it combines. `key` is
-- what the usage view prints: the model, 'amount' for a charge by amount; the API key's
-- id, 'none' for a charge without one. `charges` counts charges, not refunds.
CREATE TABLE usage_rollups (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    dim       text NOT NULL CHECK (dim IN ('model', 'api_key')),
    day       date NOT NULL,
    key       text NOT NULL,
    amount    numeric NOT NULL,
    charges   bigint NOT NULL,
    PRIMARY KEY (tenant_id, dim, day, key)
);

-- The partial edge days of a window are read from the raw rows by time. Usage transactions
-- (the hot path's) are found through their charge (charges_by_time; each has exactly one,
-- at the same created_at), so this index costs the hot path nothing; being partial, it
-- also cannot be picked for the entries' foreign-key check by (tenant_id, id) (see 0004).
CREATE INDEX ledger_transactions_by_time ON ledger_transactions (tenant_id, created_at) WHERE kind <> 'usage';
CREATE INDEX refunds_by_time ON refunds (tenant_id, created_at);

-- What the rollups must hold, computed from the ledger rows alone.
CREATE VIEW flow_rollups_expected AS
SELECT t.tenant_id, (t.created_at AT TIME ZONE 'UTC')::date AS day, t.kind,
       COALESCE(sum(f.net) FILTER (WHERE f.net > 0), 0) AS credited,
       COALESCE(-sum(f.net) FILTER (WHERE f.net < 0), 0) AS debited
FROM (SELECT tenant_id, transaction_id, sum(amount) AS net FROM ledger_entries
      WHERE account IN ('paid', 'bonus', 'held') GROUP BY tenant_id, transaction_id) f
JOIN ledger_transactions t ON t.tenant_id = f.tenant_id AND t.id = f.transaction_id
WHERE f.net <> 0
GROUP BY t.tenant_id, 2, t.kind;

CREATE VIEW usage_rollups_expected AS
SELECT tenant_id, CASE WHEN GROUPING(model) = 0 THEN 'model' ELSE 'api_key' END AS dim, day,
       COALESCE(model, api_key) AS key, sum(amount) AS amount, sum(n)::int8 AS charges
FROM (SELECT c.tenant_id, (c.created_at AT TIME ZONE 'UTC')::date AS day, COALESCE(c.model, 'amount') AS model,
             COALESCE(c.api_key_id::text, 'none') AS api_key, c.amount, 1 AS n
      FROM charges c
      UNION ALL
      SELECT r.tenant_id, (r.created_at AT TIME ZONE 'UTC')::date, COALESCE(c.model, 'amount'),
             COALESCE(c.api_key_id::text, 'none'), -r.amount, 0
      FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id) items
GROUP BY tenant_id, day, GROUPING SETS ((model), (api_key));

CREATE FUNCTION flow_rollups_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flow_rollups AS r (tenant_id, day, kind, credited, debited)
    SELECT t.tenant_id, (t.created_at AT TIME ZONE 'UTC')::date, t.kind,
           COALESCE(sum(f.net) FILTER (WHERE f.net > 0), 0), COALESCE(-sum(f.net) FILTER (WHERE f.net < 0), 0)
    FROM (SELECT tenant_id, transaction_id, sum(amount) AS net FROM new_rows
          WHERE account IN ('paid', 'bonus', 'held') GROUP BY tenant_id, transaction_id) f
    JOIN ledger_transactions t ON t.tenant_id = f.tenant_id AND t.id = f.transaction_id
    WHERE f.net <> 0
    GROUP BY t.tenant_id, 2, t.kind
    -- A fixed order: two statements upserting the same rows lock them in the same order.
    ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, day, kind) DO UPDATE
        SET credited = r.credited + EXCLUDED.credited, debited = r.debited + EXCLUDED.debited;
    RETURN NULL;
END $$;

CREATE FUNCTION usage_rollups_add_charges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_rollups AS r (tenant_id, dim, day, key, amount, charges)
    SELECT tenant_id, CASE WHEN GROUPING(model) = 0 THEN 'model' ELSE 'api_key' END, day,
           COALESCE(model, api_key), sum(amount), count(*)
    FROM (SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date AS day, COALESCE(model, 'amount') AS model,
                 COALESCE(api_key_id::text, 'none') AS api_key, amount FROM new_rows) n
    GROUP BY tenant_id, day, GROUPING SETS ((model), (api_key)) ORDER BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, dim, day, key) DO UPDATE
        SET amount = r.amount + EXCLUDED.amount, charges = r.charges + EXCLUDED.charges;
    RETURN NULL;
END $$;

CREATE FUNCTION usage_rollups_add_refunds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_rollups AS r (tenant_id, dim, day, key, amount, charges)
    SELECT tenant_id, CASE WHEN GROUPING(model) = 0 THEN 'model' ELSE 'api_key' END, day,
           COALESCE(model, api_key), -sum(amount), 0
    FROM (SELECT n.tenant_id, (n.created_at AT TIME ZONE 'UTC')::date AS day, COALESCE(c.model, 'amount') AS model,
                 COALESCE(c.api_key_id::text, 'none') AS api_key, n.amount
          FROM new_rows n JOIN charges c ON c.tenant_id = n.tenant_id AND c.id = n.charge_id) n
    GROUP BY tenant_id, day, GROUPING SETS ((model), (api_key)) ORDER BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, dim, day, key) DO UPDATE SET amount = r.amount + EXCLUDED.amount;
    RETURN NULL;
END $$;

-- Triggers first, backfill second: creating a trigger locks its table against writes until
-- this migration commits, so no row can be written between the backfill's snapshot and the
-- trigger (none is counted twice, none missed).
CREATE TRIGGER flow_rollups_on_entries AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION flow_rollups_add();
CREATE TRIGGER usage_rollups_on_charges AFTER INSERT ON charges
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_rollups_add_charges();
CREATE TRIGGER usage_rollups_on_refunds AFTER INSERT ON refunds
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_rollups_add_refunds();

-- The ledger tables are append-only; so are the rows the rollups count.
CREATE TRIGGER charges_append_only BEFORE UPDATE OR DELETE ON charges
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER refunds_append_only BEFORE UPDATE OR DELETE ON refunds
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

INSERT INTO flow_rollups (tenant_id, day, kind, credited, debited)
    SELECT tenant_id, day, kind, credited, debited FROM flow_rollups_expected;
INSERT INTO usage_rollups (tenant_id, dim, day, key, amount, charges)
    SELECT tenant_id, dim, day, key, amount, charges FROM usage_rollups_expected;

-- The rows a charge or hold writes (its ledger transaction, its charge or hold, its
-- idempotency key) each carried a foreign key to `tenants`: one referential check per row,
-- i.e. a query and a FOR KEY SHARE lock on the tenant's row, in every transaction, per row.
-- They prove nothing the transaction does not already hold: every one of these rows is
-- written by the posting frame under the tenant's ledger lock, the `balances` row, which
-- itself references `tenants` (kept), and tenants are never deleted. The entries' key to
-- their transaction (`ledger_entries` -> `ledger_transactions`) is kept: that one is the
-- ledger's own integrity.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_tenant_id_fkey;
ALTER TABLE charges DROP CONSTRAINT charges_tenant_id_fkey;
ALTER TABLE holds DROP CONSTRAINT holds_tenant_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_tenant_id_fkey;

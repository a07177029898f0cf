-- Webhook claims take a bounded number of due deliveries per tenant (endpoint), walking the
-- tenants that have pending deliveries one index probe each, instead of the oldest N due
-- deliveries whoever owns them (one dead endpoint's backlog filled every claim).
CREATE INDEX webhook_deliveries_pending_by_tenant
    ON webhook_deliveries (tenant_id, next_attempt_at) WHERE status = 'pending';

//! Integration tests: the real service over HTTP on a real Postgres. One test binary
//! keeps link time down.
mod helpers;

mod adjustments;
mod auto_top_up;
mod bad_bytes;
mod bad_input;
mod batching;
mod charges;
mod config_flags;
mod connections;
mod credentials;
mod cross_tenant;
mod embedded;
mod frame;
mod holds;
mod idempotency;
mod isolation;
mod ledger;
mod limits;
mod metrics;
mod ops;
mod portal;
mod pricing;
mod rate_limits;
mod refunds;
mod restart;
mod service_tokens;
mod stripe;
mod stripe_fake;
mod stripe_webhooks;
mod suspended;
mod tenants;
mod top_up_refunds;
mod top_ups;
mod webhook_fairness;
mod webhooks;

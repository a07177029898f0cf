//! Spend limits: budgets per API key (`day`, `week`, `month`, `lifetime`) and per tenant
//! (`day`, `month`) that stop spend before the balance does, and API keys' allowed models.
//!
//! - [`window`]: UTC calendar windows, pure;
//! - [`check`]: the decision over counters, pure (a batch calls it per item, in order);
//! - [`store`]: the counters in Postgres, read and written under the tenant's lock by
//!   charges, holds, captures, releases, expiries and refunds;
//! - [`rules`]: a key's limit and allowed models (validation, the change under the lock);
//! - [`tenant`]: the tenant's own limits.
//!
//! Invariant: no limit is ever exceeded, by any amount, with any concurrency or number of
//! replicas: every decision and every counter write happens under the tenant's ledger
//! lock, in the transaction of the movement it belongs to.

pub mod check;
pub mod rules;
pub mod store;
pub mod tenant;
pub mod window;

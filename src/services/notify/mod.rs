//! Telling tenants: the transactional event outbox, webhook endpoints, the low-balance
//! watch (events and auto top-up wake-ups for every movement that lowers `available`),
//! and notices of expiring credit.

pub mod events;
pub mod expiry_notices;
pub mod low_balance;
pub mod webhooks;

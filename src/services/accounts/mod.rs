//! A tenant's account: the tenant itself, API keys and service tokens, admin adjustments
//! and conversions, balances (with the runway) and history, prices and deals, and the expiry
//! of bonus lots.

pub mod adjustments;
pub mod api_keys;
pub mod balance;
pub mod days;
pub mod expiry;
pub mod history;
pub mod prices;
pub mod runway;
pub mod tenants;

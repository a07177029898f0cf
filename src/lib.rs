//! Tally: multi-tenant prepaid billing on a double-entry ledger.
//!
//! Layers, one way: [`http`] parses and authenticates → [`services`] apply the rules →
//! [`frame`] runs every money movement's transaction (claim keys, lock, decide, post,
//! store, commit, after-commit effects) → [`ledger`] posts (the only writer of ledger
//! rows); [`pricing`] and [`money`] are pure. [`workers`] run the periodic jobs.
//! `scripts/module-cycles.py` checks that no two modules import each other, directly or
//! through others.
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod faults;
pub mod frame;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod ledger;
pub mod meters;
pub mod money;
pub mod payments;
pub mod portal;
pub mod pricing;
pub mod rate_limit;
pub mod services;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod vocab;
pub mod workers;

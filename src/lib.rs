//! Tally: multi-tenant prepaid billing on a double-entry ledger.
//!
//! Layers, one way: [`http`] parses and authenticates → [`services`] own the database
//! transaction and the rules → [`ledger`] posts (the only writer of ledger rows);
//! [`pricing`] and [`money`] are pure. [`workers`] run the periodic jobs.
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod payments;
pub mod portal;
pub mod pricing;
pub mod services;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod workers;

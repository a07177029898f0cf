//! The ledger: the only code that writes ledger rows.
//!
//! Invariants (checked by [`check::run`] and by the tests after every scenario):
//! - every transaction has two or more entries whose signed amounts sum to zero;
//! - ledger rows are append-only (a database trigger refuses UPDATE and DELETE);
//! - a tenant's cached balances (`balances.paid/bonus/held`) equal the sums of their entries,
//!   and the bonus lots' `remaining` add up to `balances.bonus`;
//! - no tenant balance is below zero: CHECK constraints refuse it inside the transaction.
//!
//! Concurrency: the tenant's `balances` row is the tenant's ledger lock. [`lock`] takes it
//! (`FOR UPDATE`; only the posting frame calls it) and [`post`] only accepts a [`Locked`]
//! tenant, so every decision about a tenant's money is made under that lock and written in
//! the same transaction. System-side accounts (revenue, promotions, …) carry no cached
//! balance: no row shared by all tenants is written per posting.

pub mod accounts;
pub mod check;
pub mod draft;
pub mod funds;
pub mod give_back;
pub mod lock;
pub mod post;

pub use accounts::{Account, TxnKind};
pub use draft::{Draft, Entry, NewLot};
pub use funds::{Funding, Funds, Lot, LotPart};
pub use give_back::give_back;
pub use lock::{lock_all, open_accounts, Locked};
pub use post::{post, post_all, BalanceSummary, Balances, LedgerError, Posted, Postings, Written};

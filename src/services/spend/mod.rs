//! Spending: what generation backends send on every job. Charges and holds are decided in
//! group-commit batches ([`charger`], [`batch`]); captures, releases, hold expiry and
//! refunds are single movements; estimates price without writing.

pub mod batch;
pub mod charger;
pub mod charges;
pub mod estimates;
pub mod holds;
pub mod records;
pub mod refunds;

//! Money in: payment methods, top-ups (manual and automatic) and their provider attempts,
//! and money that goes back: top-up refunds and reversals.
//!
//! Layers inside: [`records`] (the `top_ups` rows and views, limits) ← [`attempts`] (one
//! attempt from pending to outcome) ← [`top_ups`] (manual) and [`auto_top_up`] (settings
//! and the decision to start an attempt). Money back: [`clawback`] (the rules and postings
//! every refund and reversal shares) ← [`refunds`] (asked for through Tally, pending to
//! outcome like an attempt) and [`reversals`] (started at the provider: disputes, its own
//! refunds) ← [`provider_events`] (the provider's verified webhooks).

use std::sync::Arc;

use crate::config::Config;
use crate::faults::Faults;
use crate::frame::Frame;
use crate::payments::PaymentProvider;
use crate::services::notify::low_balance::LowBalance;

pub mod attempts;
pub mod auto_top_up;
pub mod clawback;
pub mod payment_methods;
pub mod provider_events;
pub mod records;
pub mod refunds;
pub mod reversals;
pub mod top_ups;

/// What money-in use cases need: the frame, the provider, the low-balance watch (auto
/// top-up settings and wake-ups), the fault injection points and the configuration.
#[derive(Clone)]
pub struct MoneyIn {
    pub frame: Frame,
    pub provider: Arc<dyn PaymentProvider>,
    pub low: Arc<LowBalance>,
    pub faults: Arc<Faults>,
    pub config: Arc<Config>,
}

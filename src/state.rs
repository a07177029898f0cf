//! Shared application state: one per process, cloned cheaply into every handler.
//!
//! Only the HTTP layer and the workers see it; services are handed the parts they use.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::{AuthCache, TokenHash};
use crate::clock::Clock;
use crate::config::Config;
use crate::faults::Faults;
use crate::frame::Frame;
use crate::payments::{MockProvider, PaymentProvider, StripeProvider};
use crate::rate_limit::RateLimits;
use crate::services::accounts::prices::PriceCache;
use crate::services::money_in::MoneyIn;
use crate::services::notify::low_balance::LowBalance;
use crate::services::spend::charger::Charger;

pub struct App {
    pub pool: PgPool,
    pub config: Config,
    pub admin_token_hash: TokenHash,
    pub auth_cache: AuthCache,
    pub prices: PriceCache,
    /// The time movements are decided at: the system clock, or one a test has set. The
    /// frame holds the same clock.
    pub clock: Clock,
    /// Runs every money movement (and every multi-statement write).
    pub frame: Frame,
    /// Group commit of charges and holds.
    pub charger: Arc<Charger>,
    /// Top-ups, their attempts with the payment provider, auto top-up.
    pub money_in: MoneyIn,
    pub provider: Arc<dyn PaymentProvider>,
    /// The mock provider, when it is the configured one (tests count its calls).
    pub mock: Option<Arc<MockProvider>>,
    /// Stripe, when it is the configured provider (its webhook endpoint verifies with it).
    pub stripe: Option<Arc<StripeProvider>>,
    pub faults: Arc<Faults>,
    /// The low-balance watch: its settings cache, and the wake-up of this replica's auto
    /// top-up worker when a movement takes a tenant below its threshold.
    pub low_balance: Arc<LowBalance>,
    /// Request rate limits per credential (this replica's buckets).
    pub rate_limits: RateLimits,
    /// Sends webhooks: public addresses only unless allowed, no redirects.
    pub webhook_client: reqwest::Client,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

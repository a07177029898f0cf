//! Shared application state: one per process, cloned cheaply into every handler.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::{AuthCache, TokenHash};
use crate::config::Config;
use crate::payments::{Faults, MockProvider, PaymentProvider};
use crate::services::auto_top_up;
use crate::services::charges::Charger;
use crate::services::prices::PriceCache;

pub struct App {
    pub pool: PgPool,
    pub config: Config,
    pub admin_token_hash: TokenHash,
    pub auth_cache: AuthCache,
    pub prices: PriceCache,
    pub charger: Charger,
    pub provider: Arc<dyn PaymentProvider>,
    /// The mock provider, when it is the configured one (tests count its calls).
    pub mock: Option<Arc<MockProvider>>,
    pub faults: Faults,
    /// Wakes this replica's auto top-up worker when a spend takes a tenant below its threshold.
    pub auto_top_up: auto_top_up::Signal,
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

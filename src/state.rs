//! Shared application state: one per process, cloned cheaply into every handler.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::{AuthCache, TokenHash};
use crate::config::Config;
use crate::services::charges::Charger;
use crate::services::prices::PriceCache;

pub struct App {
    pub pool: PgPool,
    pub config: Config,
    pub admin_token_hash: TokenHash,
    pub auth_cache: AuthCache,
    pub prices: PriceCache,
    pub charger: Charger,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

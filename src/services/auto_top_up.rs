//! Auto top-up configuration and state, as other services read it.
//! (The worker and the configuration endpoints are built in the money-in work.)

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{AppResult, AutoTopUpHint};
use crate::money::Money;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AutoTopUpSummary {
    pub enabled: bool,
    pub threshold: Option<Money>,
    pub amount: Option<Money>,
    /// `idle`, `in_flight`, `backing_off` or `disabled`.
    pub state: String,
}

pub async fn summary(_pool: &PgPool, _tenant_id: Uuid) -> AppResult<AutoTopUpSummary> {
    Ok(AutoTopUpSummary { enabled: false, threshold: None, amount: None, state: "disabled".into() })
}

pub async fn hint(pool: &PgPool, tenant_id: Uuid) -> AppResult<AutoTopUpHint> {
    let s = summary(pool, tenant_id).await?;
    Ok(AutoTopUpHint { enabled: s.enabled, in_flight: s.state == "in_flight" })
}

/// Called after a batch of charges or holds commits, with the tenant's `available` after it.
pub fn on_spend(_app: &crate::state::App, _tenant_id: Uuid, _available: Money) {}

/// Called inside a spending transaction (charges, holds) just before it commits, with
/// `available` before and after it: the place to write outbox events in that transaction.
pub async fn within_spend(
    _conn: &mut sqlx::PgConnection,
    _tenant_id: Uuid,
    _available_before: Money,
    _available_after: Money,
) -> AppResult<()> {
    Ok(())
}

//! An API key's spend limit and allowed models: the shapes the API takes and shows, their
//! validation, and the change of a key's settings.
//!
//! Invariant: a change that makes a limit count (a new limit, a new window, a new amount)
//! runs under the tenant's ledger lock (a posting-frame movement) and recounts the current
//! window from history in the same transaction, so the counter is exact from the first
//! decision that reads it, whatever charges were in flight.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::check::Scope;
use super::store;
use super::window::Window;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, Response};
use crate::money::Money;
use crate::services::accounts::prices::PriceCache;
use crate::vocab::KeyStatus;

/// At most this many models in one key's `allowed_models`.
pub const MAX_MODELS: usize = 100;

/// A spend limit: at most `amount` per `window` (UTC calendar windows).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimit {
    /// Positive, at most 6 decimals, as a string.
    #[schema(schema_with = crate::money::Money::positive_schema)]
    pub amount: Money,
    /// `day`, `week` (from Monday), `month` (from the 1st) or `lifetime`.
    pub window: Window,
}

impl SpendLimit {
    pub fn check(&self) -> AppResult<()> {
        if !self.amount.is_positive() {
            return Err(AppError::invalid("spend_limit.amount must be positive"));
        }
        Ok(())
    }
}

/// A limit amount of the tenant's own limits: positive.
pub fn check_amount(field: &str, amount: Money) -> AppResult<()> {
    if !amount.is_positive() {
        return Err(AppError::invalid(format!("{field} must be positive (null removes the limit)")));
    }
    Ok(())
}

/// Validates `allowed_models`: known to the price book (a typo would otherwise refuse
/// every charge of the key), at most [`MAX_MODELS`], each once. An empty list allows no
/// model: the key may then only charge explicit amounts.
pub fn check_models(prices: &PriceCache, models: Vec<String>) -> AppResult<Vec<String>> {
    if models.len() > MAX_MODELS {
        return Err(AppError::invalid(format!("allowed_models takes at most {MAX_MODELS} models")));
    }
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for m in models {
        prices.latest(&m).map_err(|_| AppError::invalid(format!("allowed_models: unknown model `{m}`")))?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// For `PATCH`-like fields: absent → `None` (unchanged), `null` → `Some(None)` (cleared),
/// a value → `Some(Some(v))`. Use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change of a key's settings, validated. `None`: unchanged.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub status: Option<KeyStatus>,
    pub spend_limit: Option<Option<SpendLimit>>,
    pub allowed_models: Option<Option<Vec<String>>>,
}

/// Applies `change` to the tenant's key under the tenant's lock; 404 when the tenant has
/// no such key (or it was deleted).
pub async fn change_key(frame: &Frame, tenant: Uuid, key: Uuid, change: KeyChange) -> AppResult<()> {
    frame.run(ChangeKey { tenant, key, change }).await
}

struct ChangeKey {
    tenant: Uuid,
    key: Uuid,
    change: KeyChange,
}

impl Movement for ChangeKey {
    type Output = ();

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.tenant]
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        books.locked(self.tenant)?;
        let c = &self.change;
        let limit = c.spend_limit.map(|l| l.map(|l| (l.amount.as_decimal(), l.window)));
        let updated: Option<Uuid> = sqlx::query_scalar(
            "UPDATE api_keys SET name = COALESCE($3, name), status = COALESCE($4, status), \
               spend_limit = CASE WHEN $5 THEN $6 ELSE spend_limit END, \
               spend_window = CASE WHEN $5 THEN $7 ELSE spend_window END, \
               allowed_models = CASE WHEN $8 THEN $9 ELSE allowed_models END \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING id",
        )
        .bind(self.tenant)
        .bind(self.key)
        .bind(c.name.as_deref())
        .bind(c.status)
        .bind(limit.is_some())
        .bind(limit.flatten().map(|l| l.0))
        .bind(limit.flatten().map(|l| l.1))
        .bind(c.allowed_models.is_some())
        .bind(c.allowed_models.clone().flatten())
        .fetch_optional(&mut *tx)
        .await?;
        updated.ok_or(AppError::NotFound)?;
        if let Some(Some(l)) = c.spend_limit {
            store::recount(tx, self.tenant, Scope::ApiKey(self.key), l.window, books.now).await?;
        }
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<()> {
        Ok(())
    }
}

/// A limit as views show it: the limit, what its current window has spent, when it resets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WindowView {
    pub limit: Money,
    pub spent: Money,
    /// `null` for a lifetime limit.
    pub resets_at: Option<DateTime<Utc>>,
}

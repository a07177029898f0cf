//! The price book: versioned price rules in Postgres, cached in memory for the hot path,
//! and per-tenant deals.
//!
//! Invariants: a stored version is never changed (a PUT adds version n+1); a charge
//! records the version it was priced with. The cache holds the latest version of each
//! model; it is updated at once on a PUT through this replica and reloaded by the
//! workers' tick, so other replicas follow within `TALLY_WORKER_INTERVAL_MS`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::frame::transaction;
use crate::pricing::{self, PriceRule, PricingError, TenantPricing};
use crate::vocab::PriceSource;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceVersion {
    pub model: String,
    pub version: i32,
    pub description: String,
    #[schema(value_type = Vec<Object>)]
    pub components: Vec<pricing::Component>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Default)]
pub struct PriceCache {
    latest: Arc<RwLock<HashMap<String, (i32, Arc<PriceRule>)>>>,
}

impl PriceCache {
    /// The latest version of `model`, or a 400 naming it.
    pub fn latest(&self, model: &str) -> AppResult<(i32, Arc<PriceRule>)> {
        self.latest
            .read()
            // A panic elsewhere while holding the lock leaves a usable map: keep serving.
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .cloned()
            .ok_or_else(|| AppError::invalid(format!("unknown model `{model}`")))
    }

    fn put(&self, model: String, version: i32, rule: PriceRule) {
        let mut map = self.latest.write().unwrap_or_else(|e| e.into_inner());
        if map.get(&model).is_none_or(|(v, _)| *v < version) {
            map.insert(model, (version, Arc::new(rule)));
        }
    }

    /// Reloads the latest versions from the database.
    pub async fn reload(&self, pool: &PgPool) -> AppResult<()> {
        let rows: Vec<(String, i32, Json<PriceRule>)> = sqlx::query_as(
            "SELECT DISTINCT ON (model) model, version, rule FROM price_rules ORDER BY model, version DESC",
        )
        .fetch_all(pool)
        .await?;
        for (model, version, Json(rule)) in rows {
            self.put(model, version, rule);
        }
        Ok(())
    }
}

impl From<PricingError> for AppError {
    fn from(e: PricingError) -> Self {
        AppError::InvalidRequest(e.to_string())
    }
}

/// Seeds the price book: a model the book lists gets a new version when the book's rule
/// differs from the latest version the book itself wrote. Rules an operator PUT win.
pub async fn seed(pool: &PgPool, book: Vec<(String, PriceRule)>) -> AppResult<()> {
    transaction(pool, move |tx| Box::pin(seed_in(tx, book))).await
}

async fn seed_in(tx: &mut PgConnection, book: Vec<(String, PriceRule)>) -> AppResult<()> {
    // One replica seeds at a time; the others then find nothing to do.
    sqlx::query("SELECT pg_advisory_xact_lock(7243901)").execute(&mut *tx).await?;
    for (model, rule) in book {
        let latest: Option<(i32, Json<PriceRule>, PriceSource)> = sqlx::query_as(
            "SELECT version, rule, source FROM price_rules WHERE model = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(&model)
        .fetch_optional(&mut *tx)
        .await?;
        let stale = match &latest {
            None => true,
            Some((_, Json(old), source)) => *source == PriceSource::Book && !same_rule(old, &rule),
        };
        if stale {
            insert_version(tx, &model, &rule, PriceSource::Book).await?;
        }
    }
    Ok(())
}

fn same_rule(a: &PriceRule, b: &PriceRule) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

async fn insert_version(
    conn: &mut PgConnection,
    model: &str,
    rule: &PriceRule,
    source: PriceSource,
) -> AppResult<PriceVersion> {
    let (version, created_at): (i32, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO price_rules (model, version, rule, source, created_at) \
         SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, now() FROM price_rules WHERE model = $1 \
         RETURNING version, created_at",
    )
    .bind(model)
    .bind(Json(rule))
    .bind(source)
    .fetch_one(conn)
    .await?;
    Ok(PriceVersion {
        model: model.into(),
        version,
        description: rule.description.clone(),
        components: rule.components.clone(),
        created_at,
    })
}

/// `PUT /v1/admin/prices/{model}`: a new version.
pub async fn put(pool: PgPool, cache: PriceCache, model: String, rule: PriceRule) -> AppResult<PriceVersion> {
    pricing::validate_model_name(&model)?;
    rule.validate()?;
    let (m, r) = (model.clone(), rule.clone());
    let v = transaction(&pool, move |tx| {
        Box::pin(async move {
            // Serialise writers of one model so version numbers never collide.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('price:' || $1))").bind(&m).execute(&mut *tx).await?;
            insert_version(tx, &m, &r, PriceSource::Admin).await
        })
    })
    .await?;
    cache.put(model, v.version, rule);
    Ok(v)
}

type VersionRow = (String, i32, Json<PriceRule>, DateTime<Utc>);

fn to_version((model, version, Json(rule), created_at): VersionRow) -> PriceVersion {
    PriceVersion { model, version, description: rule.description, components: rule.components, created_at }
}

pub async fn list_latest(pool: &PgPool) -> AppResult<Vec<PriceVersion>> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT DISTINCT ON (model) model, version, rule, created_at FROM price_rules ORDER BY model, version DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(to_version).collect())
}

pub async fn versions(pool: &PgPool, model: &str) -> AppResult<Vec<PriceVersion>> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT model, version, rule, created_at FROM price_rules WHERE model = $1 ORDER BY version DESC",
    )
    .bind(model)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Err(AppError::NotFound);
    }
    Ok(rows.into_iter().map(to_version).collect())
}

/// One stored version, for repricing a hold's capture with the version it was placed at.
pub async fn rule_version(conn: &mut PgConnection, model: &str, version: i32) -> AppResult<PriceRule> {
    let rule: Option<Json<PriceRule>> =
        sqlx::query_scalar("SELECT rule FROM price_rules WHERE model = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(conn)
            .await?;
    rule.map(|r| r.0).ok_or_else(|| AppError::internal("a recorded price version is missing"))
}

pub async fn deal(conn: &mut PgConnection, tenant_id: Uuid) -> AppResult<Option<TenantPricing>> {
    let d: Option<Json<TenantPricing>> = sqlx::query_scalar("SELECT deal FROM tenant_pricing WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    Ok(d.map(|d| d.0))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantPricingView {
    pub tenant_id: Uuid,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub deal: TenantPricing,
    pub updated_at: Option<DateTime<Utc>>,
}

pub async fn get_deal(pool: &PgPool, tenant_id: Uuid) -> AppResult<TenantPricingView> {
    let row: Option<(bool, Option<Json<TenantPricing>>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT true, p.deal, p.updated_at FROM tenants t LEFT JOIN tenant_pricing p ON p.tenant_id = t.id WHERE t.id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let (_, deal, updated_at) = row.ok_or(AppError::NotFound)?;
    Ok(TenantPricingView { tenant_id, deal: deal.map(|d| d.0).unwrap_or_default(), updated_at })
}

pub async fn put_deal(
    pool: &PgPool,
    cache: &PriceCache,
    tenant_id: Uuid,
    deal: TenantPricing,
) -> AppResult<TenantPricingView> {
    deal.validate()?;
    for model in deal.models.keys() {
        cache.latest(model)?;
    }
    let updated = sqlx::query_scalar::<_, DateTime<Utc>>(
        "INSERT INTO tenant_pricing (tenant_id, deal, updated_at) SELECT $1, $2, now() \
         WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1) \
         ON CONFLICT (tenant_id) DO UPDATE SET deal = EXCLUDED.deal, updated_at = EXCLUDED.updated_at \
         RETURNING updated_at",
    )
    .bind(tenant_id)
    .bind(Json(&deal))
    .fetch_optional(pool)
    .await?
    .ok_or(AppError::NotFound)?;
    Ok(TenantPricingView { tenant_id, deal, updated_at: Some(updated) })
}

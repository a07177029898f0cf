//! Tenant API keys and service tokens: created with a secret shown once, stored as hashes.
//!
//! A key may carry a spend limit and a list of allowed models (`services::limits`): its
//! views show them with what the limit's current window has spent (read from the limit's
//! counter, never from history). `now` is the application clock's time: it says which
//! window is current.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{generate_token, hash_token, visible_prefix, AuthCache};
use crate::error::{AppError, AppResult};
use crate::frame::Frame;
use crate::ids::new_id;
use crate::money::Money;
use crate::services::accounts::prices::PriceCache;
use crate::services::limits::rules::{self, present, KeyChange, SpendLimit};
use crate::services::limits::window::{self, Window};
use crate::services::{Page, PageParams};
use crate::vocab::KeyStatus;

/// A new service token: only its name (limits and allowed models are a tenant key's).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceToken {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// At most `amount` per `window`; `null` or absent: no limit.
    pub spend_limit: Option<SpendLimit>,
    /// The models charges and holds naming this key may use; `null` or absent: all.
    #[schema(max_items = 100)]
    pub allowed_models: Option<Vec<String>>,
}

/// Absent fields are left as they are; `null` removes a limit or the model list.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// `enabled` or `disabled`.
    pub status: Option<KeyStatus>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<SpendLimit>, nullable)]
    pub spend_limit: Option<Option<SpendLimit>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub allowed_models: Option<Option<Vec<String>>>,
}

/// A newly created key: `key` is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    pub key: String,
    pub prefix: String,
    pub status: KeyStatus,
    pub spend_limit: Option<SpendLimit>,
    pub allowed_models: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Net usage (charges minus refunds) attributed to this key.
    pub used_amount: Money,
    pub spend_limit: Option<SpendLimit>,
    pub allowed_models: Option<Vec<String>>,
    /// What the limit's current window has spent ("0.00" without a limit).
    pub spent_in_window: Money,
    /// When the limit's window resets; `null` for `lifetime` or no limit.
    pub window_resets_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifiedKey {
    pub tenant_id: Uuid,
    pub api_key_id: Uuid,
    pub status: KeyStatus,
    pub spend_limit: Option<SpendLimit>,
    pub allowed_models: Option<Vec<String>>,
    pub spent_in_window: Money,
    pub window_resets_at: Option<DateTime<Utc>>,
}

/// A service token as listed: never the token itself.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ServiceToken {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedServiceToken {
    pub id: Uuid,
    pub name: String,
    pub token: String,
}

fn check_name(name: &str) -> AppResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(AppError::invalid("name must be 1-200 characters"));
    }
    Ok(())
}

pub async fn create(pool: &PgPool, prices: &PriceCache, tenant_id: Uuid, req: CreateKey) -> AppResult<CreatedKey> {
    check_name(&req.name)?;
    if let Some(l) = &req.spend_limit {
        l.check()?;
    }
    let allowed_models = req.allowed_models.map(|m| rules::check_models(prices, m)).transpose()?;
    let key = generate_token("tk");
    let (id, created_at) = (new_id(), Utc::now());
    // A new key has spent nothing: its limit's counter starts with its first spend.
    let inserted = sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, name, prefix, key_hash, status, created_at, spend_limit, spend_window, \
           allowed_models) \
         SELECT $1, $2, $3, $4, $5, 'enabled', $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(req.name.trim())
    .bind(visible_prefix(&key))
    .bind(&hash_token(&key)[..])
    .bind(created_at)
    .bind(req.spend_limit.map(|l| l.amount.as_decimal()))
    .bind(req.spend_limit.map(|l| l.window))
    .bind(&allowed_models)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(CreatedKey {
        id,
        name: req.name.trim().into(),
        prefix: visible_prefix(&key),
        key,
        status: KeyStatus::Enabled,
        spend_limit: req.spend_limit,
        allowed_models,
        created_at,
    })
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    status: KeyStatus,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    used: Decimal,
    spend_limit: Option<Decimal>,
    spend_window: Option<Window>,
    allowed_models: Option<Vec<String>>,
    spent: Option<Decimal>,
}

/// `$1`: the tenant; `$2..$5`: the current window starts (`window::starts`).
const SELECT_KEYS: &str = "SELECT k.id, k.name, k.prefix, k.status, k.created_at, \
       GREATEST(k.last_used_at, u.last_at) AS last_used_at, COALESCE(u.used, 0) - COALESCE(r.refunded, 0) AS used, \
       k.spend_limit, k.spend_window, k.allowed_models, sc.spent \
     FROM api_keys k \
     LEFT JOIN LATERAL (SELECT sum(c.amount) AS used, max(c.created_at) AS last_at FROM charges c \
                        WHERE c.tenant_id = k.tenant_id AND c.api_key_id = k.id) u ON true \
     LEFT JOIN LATERAL (SELECT sum(f.amount) AS refunded FROM refunds f JOIN charges c \
                          ON c.tenant_id = f.tenant_id AND c.id = f.charge_id \
                        WHERE c.tenant_id = k.tenant_id AND c.api_key_id = k.id) r ON true \
     LEFT JOIN spend_counters sc ON sc.tenant_id = k.tenant_id AND sc.scope = k.id \
       AND sc.window_kind = k.spend_window \
       AND sc.window_start = (CASE k.spend_window WHEN 'day' THEN $2 WHEN 'week' THEN $3 WHEN 'month' THEN $4 \
                              ELSE $5 END)::timestamptz \
     WHERE k.tenant_id = $1 AND k.deleted_at IS NULL";

/// A key's limit as views show it: the limit, its window's spend, when the window resets.
fn limit_view(
    limit: Option<Decimal>,
    window: Option<Window>,
    spent: Option<Decimal>,
    now: DateTime<Utc>,
) -> (Option<SpendLimit>, Money, Option<DateTime<Utc>>) {
    match (limit, window) {
        (Some(l), Some(w)) => (
            Some(SpendLimit { amount: Money::from_db(l), window: w }),
            spent.map(Money::from_db).unwrap_or(Money::ZERO),
            w.resets_at(now),
        ),
        _ => (None, Money::ZERO, None),
    }
}

fn to_key(r: KeyRow, now: DateTime<Utc>) -> ApiKey {
    let (spend_limit, spent_in_window, window_resets_at) = limit_view(r.spend_limit, r.spend_window, r.spent, now);
    ApiKey {
        id: r.id,
        name: r.name,
        prefix: r.prefix,
        status: r.status,
        created_at: r.created_at,
        last_used_at: r.last_used_at,
        used_amount: Money::from_db(r.used),
        spend_limit,
        allowed_models: r.allowed_models,
        spent_in_window,
        window_resets_at,
    }
}

fn bind_starts<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let [day, week, month, life] = window::starts(now);
    q.bind(tenant_id).bind(day).bind(week).bind(month).bind(life)
}

pub async fn list(pool: &PgPool, tenant_id: Uuid, page: &PageParams, now: DateTime<Utc>) -> AppResult<Page<ApiKey>> {
    let limit = page.limit()?;
    let sql = format!("{SELECT_KEYS} AND ($6::uuid IS NULL OR k.id < $6) ORDER BY k.id DESC LIMIT $7");
    let rows: Vec<KeyRow> =
        bind_starts(sqlx::query_as(&sql), tenant_id, now).bind(page.cursor()?).bind(limit + 1).fetch_all(pool).await?;
    Ok(Page::from_rows(rows.into_iter().map(|r| to_key(r, now)).collect(), limit, |k| k.id))
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, key_id: Uuid, now: DateTime<Utc>) -> AppResult<ApiKey> {
    let sql = format!("{SELECT_KEYS} AND k.id = $6");
    let row: Option<KeyRow> =
        bind_starts(sqlx::query_as(&sql), tenant_id, now).bind(key_id).fetch_optional(pool).await?;
    row.map(|r| to_key(r, now)).ok_or(AppError::NotFound)
}

/// Renames, enables or disables a key, and sets or removes its spend limit and allowed
/// models, under the tenant's lock (a new limit is recounted from history at once).
pub async fn update(
    frame: &Frame,
    cache: &AuthCache,
    prices: &PriceCache,
    tenant_id: Uuid,
    key_id: Uuid,
    req: UpdateKey,
) -> AppResult<ApiKey> {
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    if let Some(Some(l)) = &req.spend_limit {
        l.check()?;
    }
    let allowed_models = match req.allowed_models {
        Some(Some(m)) => Some(Some(rules::check_models(prices, m)?)),
        other => other,
    };
    let change = KeyChange {
        name: req.name.as_deref().map(|n| n.trim().to_string()),
        status: req.status,
        spend_limit: req.spend_limit,
        allowed_models,
    };
    rules::change_key(frame, tenant_id, key_id, change).await?;
    cache.forget_key(key_id);
    get(&frame.pool, tenant_id, key_id, frame.clock.now()).await
}

/// Deleting keeps the row (charges still name it) but the key never authenticates again.
pub async fn delete(pool: &PgPool, cache: &AuthCache, tenant_id: Uuid, key_id: Uuid) -> AppResult<()> {
    let deleted = sqlx::query(
        "UPDATE api_keys SET deleted_at = now(), status = 'disabled' \
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(tenant_id)
    .bind(key_id)
    .execute(pool)
    .await?;
    cache.forget_key(key_id);
    if deleted.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// For backends that receive a tenant's key: who it belongs to and whether it is usable.
/// Unknown and deleted keys are a 401.
pub async fn verify(pool: &PgPool, key: &str, now: DateTime<Utc>) -> AppResult<VerifiedKey> {
    type Row = (Uuid, Uuid, KeyStatus, Option<Decimal>, Option<Window>, Option<Vec<String>>, Option<Decimal>);
    let [day, week, month, life] = window::starts(now);
    let row: Option<Row> = sqlx::query_as(
        "SELECT k.tenant_id, k.id, k.status, k.spend_limit, k.spend_window, k.allowed_models, sc.spent \
         FROM api_keys k LEFT JOIN spend_counters sc ON sc.tenant_id = k.tenant_id AND sc.scope = k.id \
           AND sc.window_kind = k.spend_window \
           AND sc.window_start = (CASE k.spend_window WHEN 'day' THEN $2 WHEN 'week' THEN $3 WHEN 'month' THEN $4 \
                                  ELSE $5 END)::timestamptz \
         WHERE k.key_hash = $1 AND k.deleted_at IS NULL",
    )
    .bind(&hash_token(key)[..])
    .bind(day)
    .bind(week)
    .bind(month)
    .bind(life)
    .fetch_optional(pool)
    .await?;
    let (tenant_id, api_key_id, status, limit, window, allowed_models, spent) = row.ok_or(AppError::Unauthorized)?;
    let (spend_limit, spent_in_window, window_resets_at) = limit_view(limit, window, spent, now);
    Ok(VerifiedKey { tenant_id, api_key_id, status, spend_limit, allowed_models, spent_in_window, window_resets_at })
}

pub async fn create_service_token(pool: &PgPool, name: &str) -> AppResult<CreatedServiceToken> {
    check_name(name)?;
    let token = generate_token("st");
    let id = new_id();
    sqlx::query("INSERT INTO service_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, now())")
        .bind(id)
        .bind(name.trim())
        .bind(&hash_token(&token)[..])
        .execute(pool)
        .await?;
    Ok(CreatedServiceToken { id, name: name.trim().into(), token })
}

/// Service tokens not revoked, newest first.
pub async fn list_service_tokens(pool: &PgPool, page: &PageParams) -> AppResult<Page<ServiceToken>> {
    let limit = page.limit()?;
    let rows: Vec<ServiceToken> = sqlx::query_as(
        "SELECT id, name, created_at FROM service_tokens \
         WHERE revoked_at IS NULL AND ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(page.cursor()?)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, limit, |t| t.id))
}

/// Revokes a token: the row stays (transactions name it as their actor), the token never
/// authenticates again here, and elsewhere once their cache period has passed.
pub async fn revoke_service_token(pool: &PgPool, cache: &AuthCache, id: Uuid) -> AppResult<()> {
    let revoked = sqlx::query("UPDATE service_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    cache.forget_service_token(id);
    if revoked.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

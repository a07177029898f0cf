//! Tenant API keys and service tokens: created with a secret shown once, stored as hashes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{generate_token, hash_token, visible_prefix, AuthCache};
use crate::error::{AppError, AppResult};
use crate::ids::new_id;
use crate::money::Money;
use crate::services::{Page, PageParams};
use crate::vocab::KeyStatus;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    pub name: Option<String>,
    /// `enabled` or `disabled`.
    pub status: Option<KeyStatus>,
}

/// A newly created key: `key` is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    pub key: String,
    pub prefix: String,
    pub status: KeyStatus,
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
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifiedKey {
    pub tenant_id: Uuid,
    pub api_key_id: Uuid,
    pub status: KeyStatus,
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
    if name.trim().is_empty() || name.len() > 200 {
        return Err(AppError::invalid("name must be 1-200 characters"));
    }
    Ok(())
}

pub async fn create(pool: &PgPool, tenant_id: Uuid, req: CreateKey) -> AppResult<CreatedKey> {
    check_name(&req.name)?;
    let key = generate_token("tk");
    let (id, created_at) = (new_id(), Utc::now());
    let inserted = sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, name, prefix, key_hash, status, created_at) \
         SELECT $1, $2, $3, $4, $5, 'enabled', $6 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(req.name.trim())
    .bind(visible_prefix(&key))
    .bind(&hash_token(&key)[..])
    .bind(created_at)
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
        created_at,
    })
}

type KeyRow = (Uuid, String, String, KeyStatus, DateTime<Utc>, Option<DateTime<Utc>>, Decimal);

const SELECT_KEYS: &str = "SELECT k.id, k.name, k.prefix, k.status, k.created_at, \
       GREATEST(k.last_used_at, u.last_at), COALESCE(u.used, 0) - COALESCE(r.refunded, 0) \
     FROM api_keys k \
     LEFT JOIN LATERAL (SELECT sum(c.amount) AS used, max(c.created_at) AS last_at FROM charges c \
                        WHERE c.tenant_id = k.tenant_id AND c.api_key_id = k.id) u ON true \
     LEFT JOIN LATERAL (SELECT sum(f.amount) AS refunded FROM refunds f JOIN charges c \
                          ON c.tenant_id = f.tenant_id AND c.id = f.charge_id \
                        WHERE c.tenant_id = k.tenant_id AND c.api_key_id = k.id) r ON true \
     WHERE k.tenant_id = $1 AND k.deleted_at IS NULL";

fn to_key(r: KeyRow) -> ApiKey {
    ApiKey {
        id: r.0,
        name: r.1,
        prefix: r.2,
        status: r.3,
        created_at: r.4,
        last_used_at: r.5,
        used_amount: Money::from_db(r.6),
    }
}

pub async fn list(pool: &PgPool, tenant_id: Uuid, page: &PageParams) -> AppResult<Page<ApiKey>> {
    let limit = page.limit()?;
    let rows: Vec<KeyRow> =
        sqlx::query_as(&format!("{SELECT_KEYS} AND ($2::uuid IS NULL OR k.id < $2) ORDER BY k.id DESC LIMIT $3"))
            .bind(tenant_id)
            .bind(page.cursor()?)
            .bind(limit + 1)
            .fetch_all(pool)
            .await?;
    Ok(Page::from_rows(rows.into_iter().map(to_key).collect(), limit, |k| k.id))
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, key_id: Uuid) -> AppResult<ApiKey> {
    let row: Option<KeyRow> = sqlx::query_as(&format!("{SELECT_KEYS} AND k.id = $2"))
        .bind(tenant_id)
        .bind(key_id)
        .fetch_optional(pool)
        .await?;
    row.map(to_key).ok_or(AppError::NotFound)
}

pub async fn update(
    pool: &PgPool,
    cache: &AuthCache,
    tenant_id: Uuid,
    key_id: Uuid,
    req: UpdateKey,
) -> AppResult<ApiKey> {
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    let updated = sqlx::query(
        "UPDATE api_keys SET name = COALESCE($3, name), status = COALESCE($4, status) \
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(tenant_id)
    .bind(key_id)
    .bind(req.name.as_deref().map(str::trim))
    .bind(req.status)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    cache.forget_key(key_id);
    get(pool, tenant_id, key_id).await
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
pub async fn verify(pool: &PgPool, key: &str) -> AppResult<VerifiedKey> {
    let row: Option<(Uuid, Uuid, KeyStatus)> =
        sqlx::query_as("SELECT tenant_id, id, status FROM api_keys WHERE key_hash = $1 AND deleted_at IS NULL")
            .bind(&hash_token(key)[..])
            .fetch_optional(pool)
            .await?;
    let (tenant_id, api_key_id, status) = row.ok_or(AppError::Unauthorized)?;
    Ok(VerifiedKey { tenant_id, api_key_id, status })
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

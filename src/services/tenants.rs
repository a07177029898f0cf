//! Tenants: creation (with the configured signup credit), reads, updates.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::in_transaction;
use super::{Page, PageParams};
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::ids::new_id;
use crate::ledger::{self, Account, Draft, TxnKind};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub external_ref: Option<String>,
    pub currency: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    pub external_ref: Option<String>,
    /// Only `USD` is supported.
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    /// `active` or `suspended`.
    pub status: Option<String>,
}

const COLUMNS: &str = "id, name, external_ref, currency, status, created_at";

fn check_name(name: &str) -> AppResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(AppError::invalid("name must be 1-200 characters"));
    }
    Ok(())
}

pub async fn create(pool: PgPool, cfg: &Config, req: CreateTenant) -> AppResult<Tenant> {
    check_name(&req.name)?;
    if let Some(r) = &req.external_ref {
        if r.is_empty() || r.len() > 200 {
            return Err(AppError::invalid("external_ref must be 1-200 characters"));
        }
    }
    let currency = req.currency.unwrap_or_else(|| "USD".into());
    if currency != "USD" {
        return Err(AppError::invalid("currency: only USD is supported"));
    }
    let now = Utc::now();
    let (signup_credit, signup_days) = (cfg.signup_credit, cfg.signup_credit_expires_days);
    in_transaction(&pool, move |tx| {
        Box::pin(async move {
            let tenant: Tenant = sqlx::query_as(&format!(
                "INSERT INTO tenants ({COLUMNS}) VALUES ($1, $2, $3, $4, 'active', $5) RETURNING {COLUMNS}"
            ))
            .bind(new_id())
            .bind(req.name.trim())
            .bind(&req.external_ref)
            .bind(&currency)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    AppError::Conflict("a tenant with this external_ref already exists".into())
                }
                _ => e.into(),
            })?;
            ledger::open_accounts(tx, tenant.id, &currency).await?;
            if signup_credit.is_positive() {
                let mut locked =
                    ledger::lock(tx, tenant.id, now).await?.ok_or_else(|| AppError::internal("tenant vanished"))?;
                let expires = signup_days.map(|d| now + Duration::days(d.into()));
                let draft = Draft::new(TxnKind::Signup, now)
                    .description(Some("Signup credit".into()))
                    .actor("system")
                    .grant_lot(Account::Promotions, TxnKind::Signup, signup_credit, expires);
                ledger::post(tx, &mut locked, &[draft]).await?;
            }
            Ok(tenant)
        })
    })
    .await
}

pub async fn get(pool: &PgPool, id: Uuid) -> AppResult<Tenant> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn list(pool: &PgPool, page: &PageParams) -> AppResult<Page<Tenant>> {
    let limit = page.limit()?;
    let rows: Vec<Tenant> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenants WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    ))
    .bind(page.cursor()?)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, limit, |t| t.id))
}

pub async fn update(pool: &PgPool, id: Uuid, req: UpdateTenant) -> AppResult<Tenant> {
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    if let Some(s) = &req.status {
        if s != "active" && s != "suspended" {
            return Err(AppError::invalid("status must be active or suspended"));
        }
    }
    sqlx::query_as(&format!(
        "UPDATE tenants SET name = COALESCE($2, name), status = COALESCE($3, status) WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(req.name.as_deref().map(str::trim))
    .bind(&req.status)
    .fetch_optional(pool)
    .await?
    .ok_or(AppError::NotFound)
}

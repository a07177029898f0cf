//! Tenants: creation (with the configured signup credit, in one posting-frame movement),
//! reads, updates.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, Response};
use crate::ids::new_id;
use crate::ledger::{self, Account, Draft, TxnKind};
use crate::money::Money;
use crate::services::{Page, PageParams};
use crate::vocab::TenantStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub external_ref: Option<String>,
    pub currency: String,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub external_ref: Option<String>,
    /// Only `USD` is supported.
    #[schema(value_type = Option<String>, pattern = "^USD$")]
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// `active` or `suspended`.
    pub status: Option<TenantStatus>,
}

const COLUMNS: &str = "id, name, external_ref, currency, status, created_at";

fn check_name(name: &str) -> AppResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(AppError::invalid("name must be 1-200 characters"));
    }
    Ok(())
}

pub async fn create(frame: &Frame, cfg: &Config, req: CreateTenant) -> AppResult<Tenant> {
    check_name(&req.name)?;
    if let Some(r) = &req.external_ref {
        if r.is_empty() || r.chars().count() > 200 {
            return Err(AppError::invalid("external_ref must be 1-200 characters"));
        }
    }
    let currency = req.currency.unwrap_or_else(|| "USD".into());
    if currency != "USD" {
        return Err(AppError::invalid("currency: only USD is supported"));
    }
    let signup = cfg.signup_credit.is_positive().then_some((cfg.signup_credit, cfg.signup_credit_expires_days));
    let tenant = Tenant {
        id: new_id(),
        name: req.name.trim().to_string(),
        external_ref: req.external_ref,
        currency,
        status: TenantStatus::Active,
        created_at: Utc::now(),
    };
    frame.run(Open { tenant, signup }).await
}

/// A new tenant: its row and accounts (before the lock), then its signup credit.
struct Open {
    tenant: Tenant,
    signup: Option<(Money, Option<u32>)>,
}

impl Movement for Open {
    type Output = Tenant;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.tenant.id]
    }

    async fn prepare(&mut self, tx: &mut PgConnection) -> AppResult<()> {
        let t = &self.tenant;
        sqlx::query(&format!("INSERT INTO tenants ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
            .bind(t.id)
            .bind(&t.name)
            .bind(&t.external_ref)
            .bind(&t.currency)
            .bind(t.status)
            .bind(t.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    AppError::Conflict("a tenant with this external_ref already exists".into())
                }
                _ => e.into(),
            })?;
        ledger::open_accounts(tx, t.id, &t.currency).await?;
        Ok(())
    }

    async fn decide(&mut self, _tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let Some((credit, days)) = self.signup else { return Ok(()) };
        let now = books.now;
        let expires = days.map(|d| now + Duration::days(d.into()));
        let draft = Draft::new(TxnKind::Signup, now)
            .description(Some("Signup credit".into()))
            .actor("system")
            .grant_lot(Account::Promotions, TxnKind::Signup, credit, expires);
        books.stage(self.tenant.id, draft)?;
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Tenant> {
        Ok(self.tenant)
    }
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
    sqlx::query_as(&format!(
        "UPDATE tenants SET name = COALESCE($2, name), status = COALESCE($3, status) WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(req.name.as_deref().map(str::trim))
    .bind(req.status)
    .fetch_optional(pool)
    .await?
    .ok_or(AppError::NotFound)
}

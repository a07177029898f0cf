//! A tenant's own spend limits (`PUT/GET /v1/tenants/{id}/spend-limits`): a `day` and a
//! `month` limit over all of the tenant's spend, whichever key (or none) it names.
//!
//! A change runs under the tenant's ledger lock and recounts each limit it sets, so the
//! view it answers with (and every decision after it) is exact.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::check::Scope;
use super::rules::{check_amount, present, WindowView};
use super::store;
use super::window::Window;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, Response};
use crate::money::Money;

/// Absent: unchanged; `null`: no limit for that window; an amount: the new limit.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::money::Money::positive_or_null_schema)]
    pub day: Option<Option<Money>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::money::Money::positive_or_null_schema)]
    pub month: Option<Option<Money>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantLimits {
    pub day: Option<WindowView>,
    pub month: Option<WindowView>,
    pub currency: String,
}

pub async fn get(pool: &PgPool, tenant: Uuid, now: DateTime<Utc>) -> AppResult<TenantLimits> {
    let mut conn = pool.acquire().await?;
    read(&mut conn, tenant, now).await
}

pub async fn put(frame: &Frame, tenant: Uuid, req: TenantLimitsRequest) -> AppResult<TenantLimits> {
    for (field, v) in [("day", req.day), ("month", req.month)] {
        if let Some(Some(amount)) = v {
            check_amount(field, amount)?;
        }
    }
    frame.run(PutLimits { tenant, req, view: None }).await
}

/// The tenant's limits and what their current windows have spent; 404 for no tenant.
async fn read(conn: &mut PgConnection, tenant: Uuid, now: DateTime<Utc>) -> AppResult<TenantLimits> {
    type Row = (String, Option<Decimal>, Option<Decimal>, Option<Decimal>, Option<Decimal>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.currency, l.day_limit, l.month_limit, d.spent, m.spent FROM tenants t \
         LEFT JOIN tenant_spend_limits l ON l.tenant_id = t.id \
         LEFT JOIN spend_counters d ON d.tenant_id = t.id AND d.scope = t.id AND d.window_kind = 'day' \
           AND d.window_start = $2 \
         LEFT JOIN spend_counters m ON m.tenant_id = t.id AND m.scope = t.id AND m.window_kind = 'month' \
           AND m.window_start = $3 \
         WHERE t.id = $1",
    )
    .bind(tenant)
    .bind(Window::Day.start(now))
    .bind(Window::Month.start(now))
    .fetch_optional(conn)
    .await?;
    let (currency, day, month, day_spent, month_spent) = row.ok_or(AppError::NotFound)?;
    let view = |w: Window, limit: Option<Decimal>, spent: Option<Decimal>| {
        limit.map(|l| WindowView {
            limit: Money::from_db(l),
            spent: spent.map(Money::from_db).unwrap_or(Money::ZERO),
            resets_at: w.resets_at(now),
        })
    };
    Ok(TenantLimits {
        day: view(Window::Day, day, day_spent),
        month: view(Window::Month, month, month_spent),
        currency,
    })
}

struct PutLimits {
    tenant: Uuid,
    req: TenantLimitsRequest,
    view: Option<TenantLimits>,
}

impl Movement for PutLimits {
    type Output = TenantLimits;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.tenant]
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        books.locked(self.tenant)?;
        let (day, month) = (self.req.day, self.req.month);
        sqlx::query(
            "INSERT INTO tenant_spend_limits (tenant_id, day_limit, month_limit, updated_at) \
             VALUES ($1, CASE WHEN $2 THEN $3 END, CASE WHEN $4 THEN $5 END, $6) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
               day_limit = CASE WHEN $2 THEN $3 ELSE tenant_spend_limits.day_limit END, \
               month_limit = CASE WHEN $4 THEN $5 ELSE tenant_spend_limits.month_limit END, \
               updated_at = $6",
        )
        .bind(self.tenant)
        .bind(day.is_some())
        .bind(day.flatten().map(Money::as_decimal))
        .bind(month.is_some())
        .bind(month.flatten().map(Money::as_decimal))
        .bind(books.now)
        .execute(&mut *tx)
        .await?;
        for (w, v) in [(Window::Day, day), (Window::Month, month)] {
            if let Some(Some(_)) = v {
                store::recount(tx, self.tenant, Scope::Tenant, w, books.now).await?;
            }
        }
        self.view = Some(read(tx, self.tenant, books.now).await?);
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<TenantLimits> {
        self.view.ok_or_else(|| AppError::internal("spend limits not written"))
    }
}

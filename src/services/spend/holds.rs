//! Holds for long jobs: capture (at most the held amount; the rest released), release,
//! and expiry. Each is one posting-frame movement. Each hold is resolved exactly once: the
//! hold row is locked and its status checked under the tenant's ledger lock, so a
//! concurrent capture and release cannot both win. Lock order: the tenant's ledger (the
//! frame), then the hold row.
//!
//! Spend limits: a hold counted its whole amount when it was placed; a capture keeps what
//! it took counted and gives the rest back, a release or an expiry gives all of it back,
//! to the windows the hold counted in that are still current (`limits::store::give_back`).

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::records::{insert_charges, Charge, ChargeView, Hold, HoldRow, HoldView, HOLD_COLUMNS};
use crate::clock::Clock;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, OneKey, Response, Staged};
use crate::idempotency::{self, Claim, Claimed, IdempotencyKey, Side, Stored};
use crate::ids::new_id;
use crate::ledger::{self, Account, Draft, Funding, TxnKind};
use crate::money::Money;
use crate::pricing;
use crate::services::accounts::prices;
use crate::services::limits::store as limits;
use crate::services::notify::events::{self, EventType};
use crate::vocab::HoldStatus;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// At most the held amount; without `amount` or `usage`, the whole hold.
    #[schema(schema_with = crate::money::Money::positive_or_null_schema)]
    pub amount: Option<Money>,
    /// Final usage, priced with the price version the hold was placed at.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
}

/// The tenant a hold belongs to (no lock), for scoping before anything else.
pub async fn tenant_of(pool: &PgPool, hold_id: Uuid) -> AppResult<Uuid> {
    sqlx::query_scalar("SELECT tenant_id FROM holds WHERE id = $1")
        .bind(hold_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn get(pool: &PgPool, tenant: Uuid, hold_id: Uuid) -> AppResult<HoldView> {
    let row: HoldRow = sqlx::query_as(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(hold_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)?;
    let hold = Hold::from(row);
    let (currency, captured): (String, Option<Decimal>) = sqlx::query_as(
        "SELECT t.currency, (SELECT amount FROM charges c WHERE c.tenant_id = $1 AND c.id = $2) FROM tenants t WHERE t.id = $1",
    )
    .bind(tenant)
    .bind(hold.charge_id)
    .fetch_one(pool)
    .await?;
    Ok(hold.view(&currency, captured.map(Money::from_db)))
}

/// Locks the hold row; the frame holds the tenant's ledger lock already.
async fn lock_hold(conn: &mut PgConnection, tenant: Uuid, hold_id: Uuid) -> AppResult<Hold> {
    let row: HoldRow =
        sqlx::query_as(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE tenant_id = $1 AND id = $2 FOR UPDATE"))
            .bind(tenant)
            .bind(hold_id)
            .fetch_optional(conn)
            .await?
            .ok_or(AppError::NotFound)?;
    Ok(row.into())
}

fn ensure_active(hold: &Hold, now: DateTime<Utc>) -> AppResult<()> {
    if hold.status != HoldStatus::Active {
        return Err(AppError::Conflict(format!("the hold is already {}", hold.status)));
    }
    if hold.expires_at <= now {
        return Err(AppError::Conflict("the hold has expired".into()));
    }
    Ok(())
}

/// Stages the drafts that move `funding` from held back to where it came from.
async fn stage_release(
    conn: &mut PgConnection,
    books: &mut Books,
    hold: &Hold,
    funding: &Funding,
    why: HoldStatus,
) -> AppResult<Vec<Staged>> {
    let draft = Draft::new(TxnKind::HoldRelease, books.now)
        .description(Some(format!("Hold {why}: unused amount released")))
        .reference(json!({ "hold_id": hold.id, "reason": why }))
        .entry(Account::Held, -funding.total());
    let (draft, expiry) = ledger::give_back(conn, hold.tenant_id, draft, funding, books.now).await?;
    std::iter::once(draft).chain(expiry).map(|d| books.stage(hold.tenant_id, d)).collect()
}

async fn resolve(conn: &mut PgConnection, hold: &Hold) -> AppResult<()> {
    sqlx::query("UPDATE holds SET status = $3, charge_id = $4, resolved_at = $5 WHERE tenant_id = $1 AND id = $2")
        .bind(hold.tenant_id)
        .bind(hold.id)
        .bind(hold.status)
        .bind(hold.charge_id)
        .bind(hold.resolved_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn capture(
    frame: &Frame,
    credits_per_usd: Decimal,
    tenant: Uuid,
    hold_id: Uuid,
    (side, key): (Side, IdempotencyKey),
    req: CaptureRequest,
) -> AppResult<Stored> {
    let fp = idempotency::fingerprint(&format!("capture:{hold_id}"), &req);
    let claim = Claim { tenant, side, key, fp };
    let clock = frame.clock.clone();
    frame.run(Capture { key: OneKey::new(claim), hold_id, req, credits_per_usd, clock, decided: None }).await
}

struct Capture {
    key: OneKey,
    hold_id: Uuid,
    req: CaptureRequest,
    credits_per_usd: Decimal,
    clock: Clock,
    decided: Option<Captured>,
}

struct Captured {
    hold: Hold,
    charge: Charge,
    /// The capture itself, then the release of the rest (if any).
    staged: Vec<Staged>,
}

impl Movement for Capture {
    type Output = Stored;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.key.claim.tenant]
    }
    fn claims(&self) -> Vec<&Claim> {
        self.key.claims()
    }
    fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        self.key.claimed(results)
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let (tenant, now) = (self.key.claim.tenant, books.now);
        let active = books.locked(tenant)?.is_active();
        let mut hold = lock_hold(tx, tenant, self.hold_id).await?;
        if !active {
            return Err(AppError::Forbidden("the tenant is suspended".into()));
        }
        // The time after the lock wait, not before it: a hold that expired meanwhile is not active.
        ensure_active(&hold, self.clock.now())?;
        let held = hold.amount;
        let amount = match (&self.req.amount, &self.req.usage) {
            (Some(_), Some(_)) => return Err(AppError::invalid("give `amount` or `usage`, not both")),
            (Some(a), None) => *a,
            (None, None) => held,
            (None, Some(usage)) => {
                let (Some(model), Some(version)) = (&hold.model, hold.price_version) else {
                    return Err(AppError::invalid("this hold names an amount, not a model: capture an `amount`"));
                };
                let rule = prices::rule_version(tx, model, version).await?;
                let deal = prices::deal(tx, tenant).await?;
                pricing::quote(model, &rule, deal.as_ref(), usage)?.amount
            }
        };
        if !amount.is_positive() {
            return Err(AppError::invalid("the captured amount must be positive; release the hold instead"));
        }
        if amount > held {
            return Err(AppError::unprocessable(format!("cannot capture {amount}: the hold is for {held}")));
        }
        let (taken, rest) = hold.funding.split_spending(amount);
        let charge_id = new_id();
        let capture = Draft::new(TxnKind::Usage, now)
            .description(hold.description.clone().or_else(|| hold.model.as_ref().map(|m| format!("Usage: {m}"))))
            .reference(json!({ "charge_id": charge_id, "hold_id": hold.id, "model": hold.model }))
            .api_key(hold.api_key_id)
            .entry(Account::Held, -amount)
            .entry(Account::Revenue, amount);
        let charge = Charge {
            tenant_id: tenant,
            id: charge_id,
            transaction_id: capture.id,
            amount,
            funding: taken,
            model: hold.model.clone(),
            price_version: hold.price_version,
            usage: self.req.usage.clone(),
            description: capture.description.clone(),
            metadata: None,
            api_key_id: hold.api_key_id,
            hold_id: Some(hold.id),
            after: books.locked(tenant)?.balances.summary()?,
            created_at: now,
        };
        let mut staged = vec![books.stage(tenant, capture)?];
        if rest.total().is_positive() {
            staged.extend(stage_release(tx, books, &hold, &rest, HoldStatus::Captured).await?);
            limits::give_back(tx, tenant, hold.api_key_id, hold.created_at, rest.total(), now).await?;
        }
        (hold.status, hold.charge_id, hold.resolved_at) = (HoldStatus::Captured, Some(charge_id), Some(now));
        self.decided = Some(Captured { hold, charge, staged });
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        let c = self.decided.as_mut().ok_or_else(|| AppError::internal("capture not decided"))?;
        let last = *c.staged.last().ok_or_else(|| AppError::internal("capture not staged"))?;
        c.charge.after = books.posted(last)?.after;
        insert_charges(tx, std::slice::from_ref(&c.charge)).await?;
        resolve(tx, &c.hold).await?;
        let view: ChargeView =
            c.charge.view(&books.locked(c.hold.tenant_id)?.currency, self.credits_per_usd, Money::ZERO);
        OneKey::respond(StatusCode::CREATED, &view)
    }
    fn finish(self, stored: Vec<Response>) -> AppResult<Stored> {
        self.key.finish(stored)
    }
}

/// Releases an active hold (`released`), or an overdue one (`expired`, by the worker).
pub async fn release(frame: &Frame, tenant: Uuid, hold_id: Uuid, expire: bool) -> AppResult<HoldView> {
    let clock = frame.clock.clone();
    frame.run(Release { tenant, hold_id, expire, clock, hold: None, currency: String::new() }).await
}

struct Release {
    tenant: Uuid,
    hold_id: Uuid,
    expire: bool,
    clock: Clock,
    hold: Option<Hold>,
    currency: String,
}

impl Movement for Release {
    type Output = HoldView;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.tenant]
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        self.currency = books.locked(self.tenant)?.currency.clone();
        let mut hold = lock_hold(tx, self.tenant, self.hold_id).await?;
        let now = books.now;
        if self.expire {
            if hold.status != HoldStatus::Active || hold.expires_at > now {
                return Err(AppError::Conflict("the hold is not overdue".into()));
            }
        } else {
            // The time after the lock wait, not before it: a hold that expired meanwhile is not active.
            ensure_active(&hold, self.clock.now())?;
        }
        let status = if self.expire { HoldStatus::Expired } else { HoldStatus::Released };
        let funding = hold.funding.clone();
        stage_release(tx, books, &hold, &funding, status).await?;
        limits::give_back(tx, self.tenant, hold.api_key_id, hold.created_at, hold.amount, now).await?;
        (hold.status, hold.resolved_at) = (status, Some(now));
        self.hold = Some(hold);
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, _books: &Books) -> AppResult<Vec<Response>> {
        let hold = self.hold.as_ref().ok_or_else(|| AppError::internal("release not decided"))?;
        resolve(tx, hold).await?;
        if self.expire {
            let data = json!({
                "hold_id": hold.id,
                "amount": hold.amount,
                "currency": self.currency,
                "expires_at": hold.expires_at,
            });
            events::emit(tx, hold.tenant_id, EventType::HoldExpired, data).await?;
        }
        Ok(Vec::new())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<HoldView> {
        let hold = self.hold.ok_or_else(|| AppError::internal("release not decided"))?;
        Ok(hold.view(&self.currency, None))
    }
}

/// Expires overdue holds (up to `limit`), by the frame's clock. Returns how many expired.
pub async fn expire_overdue(frame: &Frame, limit: i64) -> AppResult<usize> {
    let overdue: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT tenant_id, id FROM holds WHERE status = 'active' AND expires_at <= $2 LIMIT $1")
            .bind(limit)
            .bind(frame.clock.now())
            .fetch_all(&frame.pool)
            .await?;
    let mut n = 0;
    for (tenant, hold) in overdue {
        match release(frame, tenant, hold, true).await {
            Ok(_) => n += 1,
            // Captured or released meanwhile (by a request or another replica).
            Err(AppError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

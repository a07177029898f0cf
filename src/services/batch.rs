//! One database transaction for a batch of one tenant's charges and holds.
//!
//! Steps, in a fixed number of round trips whatever the batch size: claim every
//! idempotency key; lock the tenant's ledger; decide each item in arrival order against
//! the funds the ones before it left; post all ledger transactions; insert the charge and
//! hold rows; store every response with its key; commit; only then answer.
//! If the batch transaction fails as a whole, each item is retried alone, so one bad
//! item cannot fail the others.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::auto_top_up;
use super::balance::BalanceSummary;
use super::charger::Item;
use super::charges::{ChargeView, Cost, FundedBy, Price, SpendKind};
use super::expiry;
use super::holds::HoldView;
use super::prices;
use crate::error::{AppError, AppResult, Shortfall};
use crate::idempotency::{self, Stored};
use crate::ids::new_id;
use crate::ledger::{self, Account, Draft, Funding, TxnKind};
use crate::money::Money;
use crate::pricing;
use crate::state::App;

pub async fn run(app: &App, tenant: Uuid, items: Vec<Item>) {
    match execute(app, tenant, &items).await {
        Ok(results) => {
            for (item, r) in items.into_iter().zip(results) {
                let _ = item.reply.send(r);
            }
        }
        Err(e) if items.len() > 1 => {
            tracing::warn!(%tenant, error = %e, size = items.len(), "batch failed; retrying its items one by one");
            for item in items {
                let r = match execute(app, tenant, std::slice::from_ref(&item)).await {
                    Ok(mut v) => v.pop().unwrap_or_else(|| Err(AppError::internal("empty batch result"))),
                    Err(e) => Err(e),
                };
                let _ = item.reply.send(r);
            }
        }
        Err(e) => {
            if let Some(item) = items.into_iter().next() {
                let _ = item.reply.send(Err(e));
            }
        }
    }
}

/// An item that passed every check, with what it will write.
struct Decided {
    index: usize,
    amount: Money,
    funding: Funding,
    available_after: Money,
    price_version: Option<i32>,
    model: Option<String>,
    usage: Option<serde_json::Value>,
    draft: Draft,
}

async fn execute(app: &App, tenant: Uuid, items: &[Item]) -> AppResult<Vec<AppResult<Stored>>> {
    let mut tx = app.pool.begin().await?;
    // An error rolls back explicitly, so the tenant's lock and the keys' advisory locks are
    // free before the items are retried one by one.
    let mut w = match write(app, tenant, items, &mut tx).await {
        Ok(w) => w,
        Err(e) => {
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = %rb, "rollback failed");
            }
            return Err(e);
        }
    };
    tx.commit().await?;

    if !w.refused.is_empty() {
        let hint = auto_top_up::hint(&app.pool, tenant).await?;
        for (index, required, available) in w.refused {
            w.out[index] = Some(Err(AppError::InsufficientFunds(Box::new(Shortfall {
                required,
                available,
                shortfall: required.checked_sub(available).unwrap_or(required),
                currency: w.currency.clone(),
                auto_top_up: hint,
            }))));
        }
    }
    if let Some(available) = w.spent_down_to {
        auto_top_up::on_spend(app, tenant, available);
    }
    Ok(finish(w.out))
}

/// What a batch wrote, and what is left to answer once it is committed.
struct Written {
    out: Vec<Option<AppResult<Stored>>>,
    /// Items that did not fit: (index, required, available when decided).
    refused: Vec<(usize, Money, Money)>,
    currency: String,
    /// `available` after the batch, when it spent anything.
    spent_down_to: Option<Money>,
}

/// Decides every item in order under the tenant's lock and writes the effects; the caller
/// commits.
async fn write(app: &App, tenant: Uuid, items: &[Item], tx: &mut PgConnection) -> AppResult<Written> {
    let now = Utc::now();
    let mut out: Vec<Option<AppResult<Stored>>> = items.iter().map(|_| None).collect();
    let keys: Vec<_> = items.iter().map(|i| (&i.key, &i.fp)).collect();
    for (slot, claim) in out.iter_mut().zip(idempotency::begin_many(tx, tenant, &keys).await?) {
        match claim {
            Ok(None) => {}
            Ok(Some(replay)) => *slot = Some(Ok(replay)),
            Err(e) => *slot = Some(Err(e)),
        }
    }
    let nothing_to_do = |out: Vec<Option<AppResult<Stored>>>| Written {
        out,
        refused: Vec::new(),
        currency: String::new(),
        spent_down_to: None,
    };
    if out.iter().all(|o| o.is_some()) {
        return Ok(nothing_to_do(out));
    }
    let Some(mut locked) = expiry::lock(tx, tenant, now).await? else {
        fill(&mut out, || Err(AppError::NotFound));
        return Ok(nothing_to_do(out));
    };
    let needs_deal = items.iter().any(|i| matches!(i.spend.price, Price::Model { .. }));
    let deal = if needs_deal { prices::deal(tx, tenant).await? } else { None };
    let known_keys = known_api_keys(tx, tenant, items).await?;
    let available_before = locked.funds.available();

    let mut decided = Vec::new();
    let mut refused = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if out[index].is_some() {
            continue;
        }
        let s = &item.spend;
        if !locked.active {
            out[index] = Some(Err(AppError::Forbidden("the tenant is suspended".into())));
            continue;
        }
        if s.api_key_id.is_some_and(|k| !known_keys.contains(&k)) {
            out[index] = Some(Err(AppError::unprocessable("api_key_id does not name a key of this tenant")));
            continue;
        }
        let (amount, price_version, model, usage) = match &s.price {
            Price::Amount(a) => (*a, None, None, None),
            Price::Model { model, version, rule, usage } => match pricing::quote(model, rule, deal.as_ref(), usage) {
                Ok(q) => (q.amount, Some(*version), Some(model.clone()), Some(usage.clone())),
                Err(e) => {
                    out[index] = Some(Err(e.into()));
                    continue;
                }
            },
        };
        if !amount.is_positive() {
            out[index] = Some(Err(AppError::unprocessable("this usage costs nothing: there is nothing to charge")));
            continue;
        }
        let funding = match locked.funds.spend(amount) {
            Ok(f) => f,
            Err(available) => {
                refused.push((index, amount, available));
                continue;
            }
        };
        let draft = spend_draft(&s.kind, s, amount, &funding, model.as_deref(), now);
        let available_after = locked.funds.available();
        decided.push(Decided { index, amount, funding, available_after, price_version, model, usage, draft });
    }

    let drafts: Vec<Draft> = decided.iter().map(|d| d.draft.clone()).collect();
    let posted = ledger::post(tx, &mut locked, &drafts).await?;
    let mut stored = Vec::with_capacity(decided.len());
    for (d, p) in decided.iter().zip(&posted) {
        let body = response(app, tenant, &locked.currency, &items[d.index].spend.kind, d, p.total_after)?;
        stored.push((d.index, Stored { status: StatusCode::CREATED, body, replayed: false }));
    }
    insert_rows(tx, tenant, items, &decided, &posted).await?;
    let done: Vec<_> = stored.iter().map(|(i, s)| (&items[*i].key, &items[*i].fp, s)).collect();
    idempotency::finish_many(tx, tenant, &done).await?;
    let final_available = locked.funds.available();
    if !decided.is_empty() {
        auto_top_up::within_spend(tx, tenant, available_before, final_available).await?;
    }
    for (i, s) in stored {
        out[i] = Some(Ok(s));
    }
    Ok(Written {
        out,
        refused,
        currency: std::mem::take(&mut locked.currency),
        spent_down_to: (!decided.is_empty()).then_some(final_available),
    })
}

fn fill(out: &mut [Option<AppResult<Stored>>], f: impl Fn() -> AppResult<Stored>) {
    for o in out.iter_mut().filter(|o| o.is_none()) {
        *o = Some(f());
    }
}

fn finish(out: Vec<Option<AppResult<Stored>>>) -> Vec<AppResult<Stored>> {
    out.into_iter().map(|o| o.unwrap_or_else(|| Err(AppError::internal("undecided batch item")))).collect()
}

async fn known_api_keys(conn: &mut PgConnection, tenant: Uuid, items: &[Item]) -> AppResult<Vec<Uuid>> {
    let named: Vec<Uuid> = items.iter().filter_map(|i| i.spend.api_key_id).collect();
    if named.is_empty() {
        return Ok(named);
    }
    Ok(sqlx::query_scalar("SELECT id FROM api_keys WHERE tenant_id = $1 AND id = ANY($2) AND deleted_at IS NULL")
        .bind(tenant)
        .bind(&named)
        .fetch_all(conn)
        .await?)
}

fn spend_draft(
    kind: &SpendKind,
    s: &super::charges::Spend,
    amount: Money,
    funding: &Funding,
    model: Option<&str>,
    now: DateTime<Utc>,
) -> Draft {
    let id = new_id();
    match kind {
        SpendKind::Charge { .. } => Draft::new(TxnKind::Usage, now)
            .description(s.description.clone().or_else(|| model.map(|m| format!("Usage: {m}"))))
            .reference(json!({ "charge_id": id, "model": model }))
            .api_key(s.api_key_id)
            .debit_funding(funding)
            .entry(Account::Revenue, amount),
        SpendKind::Hold { .. } => Draft::new(TxnKind::Hold, now)
            .description(s.description.clone().or_else(|| model.map(|m| format!("Hold: {m}"))))
            .reference(json!({ "hold_id": id, "model": model }))
            .api_key(s.api_key_id)
            .debit_funding(funding)
            .entry(Account::Held, amount),
    }
}

/// The resource id is the one the draft's reference names.
fn resource_id(d: &Decided) -> Uuid {
    let r = &d.draft.reference;
    r.get("charge_id")
        .or_else(|| r.get("hold_id"))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

fn response(
    app: &App,
    tenant: Uuid,
    currency: &str,
    kind: &SpendKind,
    d: &Decided,
    total_after: Money,
) -> AppResult<Vec<u8>> {
    let s = &d.draft;
    let funded_by = FundedBy { bonus: d.funding.bonus(), paid: d.funding.paid };
    let balance = BalanceSummary { total: total_after, available: d.available_after };
    let bytes = match kind {
        SpendKind::Charge { metadata } => serde_json::to_vec(&ChargeView {
            id: resource_id(d),
            tenant_id: tenant,
            status: "succeeded",
            cost: Cost::new(d.amount, currency, app.config.credits_per_usd),
            funded_by,
            balance,
            refunded: Money::ZERO,
            model: d.model.clone(),
            price_version: d.price_version,
            api_key_id: s.api_key_id,
            hold_id: None,
            description: s.description.clone(),
            metadata: metadata.clone(),
            created_at: s.created_at,
        }),
        SpendKind::Hold { expires_at } => serde_json::to_vec(&HoldView {
            id: resource_id(d),
            tenant_id: tenant,
            amount: d.amount,
            currency: currency.to_string(),
            status: "active".into(),
            funded_by,
            captured: None,
            charge_id: None,
            model: d.model.clone(),
            price_version: d.price_version,
            api_key_id: s.api_key_id,
            description: s.description.clone(),
            expires_at: *expires_at,
            created_at: s.created_at,
            resolved_at: None,
        }),
    };
    bytes.map_err(AppError::internal)
}

async fn insert_rows(
    conn: &mut PgConnection,
    tenant: Uuid,
    items: &[Item],
    decided: &[Decided],
    posted: &[ledger::Posted],
) -> AppResult<()> {
    let charges: Vec<(&Decided, &ledger::Posted)> = decided
        .iter()
        .zip(posted)
        .filter(|(d, _)| matches!(items[d.index].spend.kind, SpendKind::Charge { .. }))
        .collect();
    if !charges.is_empty() {
        let mut c = ChargeColumns::default();
        for (d, p) in &charges {
            let metadata = match &items[d.index].spend.kind {
                SpendKind::Charge { metadata } => metadata.clone(),
                SpendKind::Hold { .. } => None,
            };
            c.push(d, p.total_after, metadata);
        }
        sqlx::query(
            "INSERT INTO charges (tenant_id, id, transaction_id, amount, funded_bonus, funded_paid, lots, model, \
               price_version, usage, description, metadata, api_key_id, total_after, available_after, created_at) \
             SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::numeric[], $5::numeric[], $6::numeric[], $7::jsonb[], \
               $8::text[], $9::int4[], $10::jsonb[], $11::text[], $12::jsonb[], $13::uuid[], $14::numeric[], \
               $15::numeric[], $16::timestamptz[])",
        )
        .bind(tenant)
        .bind(&c.id)
        .bind(&c.txn)
        .bind(&c.amount)
        .bind(&c.bonus)
        .bind(&c.paid)
        .bind(&c.lots)
        .bind(&c.model)
        .bind(&c.version)
        .bind(&c.usage)
        .bind(&c.description)
        .bind(&c.metadata)
        .bind(&c.api_key)
        .bind(&c.total_after)
        .bind(&c.available_after)
        .bind(&c.at)
        .execute(&mut *conn)
        .await?;
    }
    let holds: Vec<&Decided> =
        decided.iter().filter(|d| matches!(items[d.index].spend.kind, SpendKind::Hold { .. })).collect();
    if !holds.is_empty() {
        let mut c = ChargeColumns::default();
        let mut expires = Vec::with_capacity(holds.len());
        for d in &holds {
            if let SpendKind::Hold { expires_at } = items[d.index].spend.kind {
                expires.push(expires_at);
            }
            c.push(d, Money::ZERO, None);
        }
        sqlx::query(
            "INSERT INTO holds (tenant_id, id, amount, funded_bonus, funded_paid, lots, status, model, price_version, \
               usage, description, api_key_id, expires_at, created_at) \
             SELECT $1, u.id, u.amount, u.bonus, u.paid, u.lots, 'active', u.model, u.version, u.usage, u.description, \
               u.api_key, u.expires_at, u.at \
             FROM UNNEST($2::uuid[], $3::numeric[], $4::numeric[], $5::numeric[], $6::jsonb[], $7::text[], $8::int4[], \
               $9::jsonb[], $10::text[], $11::uuid[], $12::timestamptz[], $13::timestamptz[]) \
               AS u(id, amount, bonus, paid, lots, model, version, usage, description, api_key, expires_at, at)",
        )
        .bind(tenant)
        .bind(&c.id)
        .bind(&c.amount)
        .bind(&c.bonus)
        .bind(&c.paid)
        .bind(&c.lots)
        .bind(&c.model)
        .bind(&c.version)
        .bind(&c.usage)
        .bind(&c.description)
        .bind(&c.api_key)
        .bind(&expires)
        .bind(&c.at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Column arrays for one UNNEST insert.
#[derive(Default)]
struct ChargeColumns {
    id: Vec<Uuid>,
    txn: Vec<Uuid>,
    amount: Vec<rust_decimal::Decimal>,
    bonus: Vec<rust_decimal::Decimal>,
    paid: Vec<rust_decimal::Decimal>,
    lots: Vec<Json<Vec<ledger::LotPart>>>,
    model: Vec<Option<String>>,
    version: Vec<Option<i32>>,
    usage: Vec<Option<serde_json::Value>>,
    description: Vec<Option<String>>,
    metadata: Vec<Option<serde_json::Value>>,
    api_key: Vec<Option<Uuid>>,
    total_after: Vec<rust_decimal::Decimal>,
    available_after: Vec<rust_decimal::Decimal>,
    at: Vec<DateTime<Utc>>,
}

impl ChargeColumns {
    fn push(&mut self, d: &Decided, total_after: Money, metadata: Option<serde_json::Value>) {
        self.id.push(resource_id(d));
        self.txn.push(d.draft.id);
        self.amount.push(d.amount.as_decimal());
        self.bonus.push(d.funding.bonus().as_decimal());
        self.paid.push(d.funding.paid.as_decimal());
        self.lots.push(Json(d.funding.lots.clone()));
        self.model.push(d.model.clone());
        self.version.push(d.price_version);
        self.usage.push(d.usage.clone());
        self.description.push(d.draft.description.clone());
        self.metadata.push(metadata);
        self.api_key.push(d.draft.api_key_id);
        self.total_after.push(total_after.as_decimal());
        self.available_after.push(d.available_after.as_decimal());
        self.at.push(d.draft.created_at);
    }
}

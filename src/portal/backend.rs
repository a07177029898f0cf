//! The portal's one door into the services: every read and every change the portal makes
//! goes through a function here, which calls the same service the JSON API calls, with
//! the same checks and (for top-ups) the same idempotency.
//!
//! Why a door of its own: pages import only from here, so a change of a service's
//! signature is an edit to this file. The portal acts on the TENANT side of idempotency,
//! as the tenant's own API keys do.
//!
//! Invariants:
//! - every function takes the tenant from the caller's session, never from the request;
//!   every lookup by id is scoped by that tenant (another tenant's id is "not found");
//! - writes are refused for a suspended tenant before any service is called; the services
//!   run their transactions where a closed browser tab cannot cancel them (the frame);
//! - nothing here decides money: top-ups, auto top-up settings and spend limits are the
//!   services' (the portal only turns form fields into the services' requests).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::http::receipts;
use crate::idempotency::{IdempotencyKey, Side};
use crate::money::Money;
use crate::services::accounts::{api_keys, balance, history, prices, tenants};
use crate::services::limits;
use crate::services::money_in::auto_top_up::{self, AutoTopUpRequest};
use crate::services::money_in::{payment_methods, records, refunds, top_ups};
use crate::services::notify::events::{self, EventType};
use crate::services::notify::webhooks;
use crate::services::PageParams;
use crate::state::{App, AppState};
use crate::vocab::{KeyStatus, TenantStatus};

pub use crate::ledger::TxnKind;
pub use crate::services::accounts::api_keys::{ApiKey, CreatedKey};
pub use crate::services::accounts::balance::{Balance, Breakdown};
pub use crate::services::accounts::history::{TransactionView, UsageRow};
pub use crate::services::limits::rules::{SpendLimit, WindowView};
pub use crate::services::limits::tenant::TenantLimits;
pub use crate::services::limits::window::Window;
pub use crate::services::money_in::auto_top_up::AutoTopUpView;
pub use crate::services::money_in::clawback::{RefundKind, RefundView};
pub use crate::services::money_in::records::TopUpView;
pub use crate::services::notify::events::EventView;
pub use crate::services::notify::webhooks::WebhookView;
pub use crate::services::Page;

/// Who the ledger and the top-up records name as having acted.
pub fn actor(session_id: Uuid) -> String {
    format!("portal_session:{session_id}")
}

fn writable(suspended: bool) -> AppResult<()> {
    if suspended {
        return Err(AppError::Forbidden("the account is suspended: the portal is read-only".into()));
    }
    Ok(())
}

fn page(limit: i64, cursor: Option<String>) -> PageParams {
    PageParams { limit: Some(limit), cursor }
}

// ---- balance ----------------------------------------------------------------------------

/// At the application's clock, like the API's: the runway's 7 days end at the same instant.
pub async fn balance(app: &App, tenant: Uuid) -> AppResult<Balance> {
    balance::get(&app.pool, tenant, app.clock.now()).await
}

/// Lifetime sums by source.
pub async fn breakdown(pool: &PgPool, tenant: Uuid) -> AppResult<Breakdown> {
    balance::breakdown(pool, tenant, &balance::Window::default()).await
}

/// The runway of the contract's "Runway" section.
#[derive(Debug, Clone)]
pub struct Runway {
    pub daily_burn: Money,
    /// `None`: no usage in the basis window.
    pub days_left: Option<rust_decimal::Decimal>,
    pub basis_days: u32,
}

/// The balance's runway, as the overview shows it.
pub fn runway(balance: &Balance) -> Option<Runway> {
    let r = &balance.runway;
    Some(Runway { daily_burn: r.daily_burn, days_left: r.days_left, basis_days: r.basis_days })
}

// ---- usage and history --------------------------------------------------------------------

/// `group`: `day`, `model` or `api_key`.
pub async fn usage(pool: &PgPool, tenant: Uuid, from: DateTime<Utc>, group: &str) -> AppResult<Vec<UsageRow>> {
    let q = history::UsageQuery { from: Some(from), to: None, group_by: Some(group.into()) };
    Ok(history::usage(pool, tenant, &q).await?.data)
}

/// The transaction filters the portal offers.
#[derive(Debug, Clone, Default)]
pub struct TxnFilter {
    pub kind: Option<TxnKind>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

fn history_filter(f: &TxnFilter, limit: i64, cursor: Option<String>) -> history::TransactionFilter {
    history::TransactionFilter {
        kind: f.kind.map(|k| k.as_str().to_string()),
        from: f.from,
        to: f.to,
        api_key_id: None,
        limit: Some(limit),
        cursor,
    }
}

pub async fn transactions(
    pool: &PgPool,
    tenant: Uuid,
    f: &TxnFilter,
    limit: i64,
    cursor: Option<String>,
) -> AppResult<Page<TransactionView>> {
    history::transactions(pool, tenant, &history_filter(f, limit, cursor)).await
}

/// The most rows one CSV download carries.
pub const CSV_MAX_ROWS: usize = 20_000;

/// Every transaction the filter matches (newest first, at most [`CSV_MAX_ROWS`]) as CSV,
/// written by the API's own CSV code. `true` when rows were left out.
pub async fn transactions_csv(pool: &PgPool, tenant: Uuid, f: &TxnFilter) -> AppResult<(String, bool)> {
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        let p = history::transactions(pool, tenant, &history_filter(f, 200, cursor)).await?;
        rows.extend(p.data);
        if rows.len() >= CSV_MAX_ROWS {
            let more = rows.len() > CSV_MAX_ROWS || p.next_cursor.is_some();
            rows.truncate(CSV_MAX_ROWS);
            return Ok((history::to_csv(&rows), more));
        }
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok((history::to_csv(&rows), false)),
        }
    }
}

// ---- API keys ---------------------------------------------------------------------------

/// At the application's clock, like the API's: it says which spend-limit window is current.
pub async fn keys(app: &App, tenant: Uuid, limit: i64, cursor: Option<String>) -> AppResult<Page<ApiKey>> {
    api_keys::list(&app.pool, tenant, &page(limit, cursor), app.clock.now()).await
}

/// Names and prefixes of the tenant's keys (for labelling usage), at most a few thousand.
pub async fn key_labels(app: &App, tenant: Uuid) -> AppResult<HashMap<Uuid, (String, String)>> {
    let mut out = HashMap::new();
    let mut cursor = None;
    for _ in 0..20 {
        let p = api_keys::list(&app.pool, tenant, &page(200, cursor), app.clock.now()).await?;
        out.extend(p.data.into_iter().map(|k| (k.id, (k.name, k.prefix))));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}

/// A key's spend limit and allowed models as a form gives them (`None`: no limit; all
/// models).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyLimits {
    pub spend_limit: Option<SpendLimit>,
    pub allowed_models: Option<Vec<String>>,
}

/// Creates a key through the API's key service (its checks, its messages).
pub async fn create_key(
    state: &AppState,
    tenant: Uuid,
    suspended: bool,
    name: String,
    limits: KeyLimits,
) -> AppResult<CreatedKey> {
    writable(suspended)?;
    let req = api_keys::CreateKey { name, spend_limit: limits.spend_limit, allowed_models: limits.allowed_models };
    api_keys::create(&state.pool, &state.prices, tenant, req).await
}

/// The models of the price book (what `allowed_models` may name), by name.
pub async fn models(pool: &PgPool) -> AppResult<Vec<String>> {
    Ok(prices::list_latest(pool).await?.into_iter().map(|p| p.model).collect())
}

/// A change of one key; `None`: unchanged.
#[derive(Debug, Clone, Default)]
pub struct KeyEdit {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// Replaces the key's spend limit and allowed models, both.
    pub limits: Option<KeyLimits>,
}

/// Changes a key through the API's key service: under the tenant's lock, a new limit
/// recounted at once; another tenant's key is "not found".
pub async fn update_key(
    state: &AppState,
    tenant: Uuid,
    suspended: bool,
    key: Uuid,
    edit: KeyEdit,
) -> AppResult<ApiKey> {
    writable(suspended)?;
    let status = edit.enabled.map(|e| if e { KeyStatus::Enabled } else { KeyStatus::Disabled });
    let (spend_limit, allowed_models) = match edit.limits {
        Some(l) => (Some(l.spend_limit), Some(l.allowed_models)),
        None => (None, None),
    };
    let req = api_keys::UpdateKey { name: edit.name, status, spend_limit, allowed_models };
    api_keys::update(&state.frame, &state.auth_cache, &state.prices, tenant, key, req).await
}

// ---- top-ups ----------------------------------------------------------------------------

/// The card on file: brand and last four digits.
pub async fn card(pool: &PgPool, tenant: Uuid) -> AppResult<Option<(String, String)>> {
    let mut conn = pool.acquire().await?;
    Ok(payment_methods::card(&mut conn, tenant).await?.map(|c| (c.brand, c.last4)))
}

/// The configured limits a top-up amount must meet.
#[derive(Debug, Clone)]
pub struct TopUpRules {
    pub min: Money,
    pub max: Money,
    pub whole_dollars: bool,
    pub bonus_percent: rust_decimal::Decimal,
}

pub fn top_up_rules(app: &App) -> TopUpRules {
    let c = &app.config;
    TopUpRules {
        min: c.top_up_min,
        max: c.top_up_max,
        whole_dollars: c.top_up_whole_dollars,
        bonus_percent: c.top_up_bonus_percent,
    }
}

/// What a top-up form submission came to.
#[derive(Debug)]
pub enum TopUpOutcome {
    /// Charged (now or by the first submission of this form): the top-up's id.
    Succeeded(Uuid),
    /// The card was declined (now or by the first submission): the provider's reason.
    Declined(String),
}

/// A manual top-up through the API's own service and idempotency: the same `key` (the
/// form's) charges the card at most once, however often the form is sent.
pub async fn top_up(
    state: &AppState,
    tenant: Uuid,
    suspended: bool,
    session_id: Uuid,
    key: &str,
    amount: Money,
) -> AppResult<TopUpOutcome> {
    writable(suspended)?;
    let key = IdempotencyKey(key.to_string());
    let req = top_ups::TopUpRequest { amount };
    // The tenant's side: a portal form can never occupy a key of the platform's backends.
    let stored = top_ups::create(&state.money_in, tenant, (Side::Tenant, key), req, actor(session_id)).await;
    match stored {
        Ok(s) => {
            let body: Value = serde_json::from_slice(&s.body).map_err(AppError::internal)?;
            if s.status.is_success() {
                let id = body["id"].as_str().and_then(|i| i.parse().ok());
                id.map(TopUpOutcome::Succeeded).ok_or_else(|| AppError::internal("top-up response without an id"))
            } else {
                // A replayed 402: the first submission was declined.
                Ok(TopUpOutcome::Declined(body["decline_reason"].as_str().unwrap_or("declined").to_string()))
            }
        }
        Err(AppError::PaymentDeclined(_, extra)) => Ok(TopUpOutcome::Declined(
            extra.get("decline_reason").and_then(Value::as_str).unwrap_or("declined").to_string(),
        )),
        Err(e) => Err(e),
    }
}

pub async fn top_ups(pool: &PgPool, tenant: Uuid, limit: i64, cursor: Option<String>) -> AppResult<Page<TopUpView>> {
    records::list(pool, tenant, &page(limit, cursor)).await
}

pub async fn top_up_view(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<TopUpView> {
    records::get(pool, tenant, id).await
}

/// The refunds and reversals of the given top-ups of the tenant, by top-up, oldest first:
/// one read for a page of history.
pub async fn top_up_refunds(
    pool: &PgPool,
    tenant: Uuid,
    top_ups: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<RefundView>>> {
    let mut out: HashMap<Uuid, Vec<RefundView>> = HashMap::new();
    for r in refunds::list_for_top_ups(pool, tenant, top_ups).await? {
        out.entry(r.top_up_id).or_default().push(r);
    }
    Ok(out)
}

/// The same printable receipt the API serves.
pub async fn receipt(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<String> {
    receipts::receipt(pool, tenant, id).await
}

// ---- settings ---------------------------------------------------------------------------

pub async fn auto_top_up(pool: &PgPool, tenant: Uuid) -> AppResult<AutoTopUpView> {
    auto_top_up::get(pool, tenant).await
}

pub async fn put_auto_top_up(
    state: &AppState,
    tenant: Uuid,
    suspended: bool,
    enabled: bool,
    threshold: Money,
    amount: Money,
    monthly_limit: Option<Money>,
) -> AppResult<AutoTopUpView> {
    writable(suspended)?;
    let req = AutoTopUpRequest { enabled, threshold, amount, monthly_limit };
    auto_top_up::put(&state.money_in, tenant, req).await
}

/// The tenant's own spend limits with what their windows have spent, at the application's
/// clock (as `GET …/spend-limits` answers).
pub async fn tenant_limits(app: &App, tenant: Uuid) -> AppResult<TenantLimits> {
    limits::tenant::get(&app.pool, tenant, app.clock.now()).await
}

/// Sets both of the tenant's limits (`None`: no limit for that window) through the service
/// of `PUT …/spend-limits`.
pub async fn put_tenant_limits(
    state: &AppState,
    tenant: Uuid,
    suspended: bool,
    day: Option<Money>,
    month: Option<Money>,
) -> AppResult<TenantLimits> {
    writable(suspended)?;
    let req = limits::tenant::TenantLimitsRequest { day: Some(day), month: Some(month) };
    limits::tenant::put(&state.frame, tenant, req).await
}

/// The webhook endpoint on file: its URL and event types (`None`: all types).
///
/// A read the webhook service does not offer yet; kept here, next to its writer's caller.
pub async fn webhook(pool: &PgPool, tenant: Uuid) -> AppResult<Option<(String, Option<Vec<String>>)>> {
    Ok(sqlx::query_as("SELECT url, events FROM webhook_endpoints WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(pool)
        .await?)
}

/// Every event type a webhook may subscribe to.
pub fn event_types() -> Vec<&'static str> {
    EventType::ALL.iter().map(|t| t.as_str()).collect()
}

pub async fn put_webhook(
    state: &AppState,
    tenant: Uuid,
    suspended: bool,
    url: String,
    events: Option<Vec<String>>,
) -> AppResult<WebhookView> {
    writable(suspended)?;
    let req = webhooks::WebhookRequest { url, events };
    webhooks::put(&state.pool, tenant, req, state.config.allow_private_webhooks).await
}

pub async fn events(pool: &PgPool, tenant: Uuid, limit: i64, cursor: Option<String>) -> AppResult<Page<EventView>> {
    events::list(pool, tenant, &page(limit, cursor)).await
}

/// Whether the tenant is suspended (404 when there is no such tenant).
pub async fn tenant_suspended(pool: &PgPool, tenant: Uuid) -> AppResult<bool> {
    Ok(tenants::get(pool, tenant).await?.status != TenantStatus::Active)
}

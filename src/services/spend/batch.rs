//! One posting-frame movement for a batch of charges and holds.
//!
//! Phases, in a fixed number of round trips whatever the batch size:
//! - claim: every item's idempotency key (replays and refusals are answers at once);
//! - decide: under the tenant's lock, each item in arrival order against the funds and
//!   the spend limits the ones before it left ([`decide_item`] is pure: the reads it needs
//!   come first, the limits and named keys in one statement, `limits::store::Budgets`);
//! - write: with the balances moved in memory, this builds the charge and hold rows and
//!   every response; then one statement writes the ledger transactions, those rows and
//!   the responses under their keys (the frame's `WRITES_WITH_POSTING`), before the commit.
//!
//! Only then are the items answered. If the batch transaction fails as a whole, each item
//! is retried alone, so one bad item cannot fail the others. Work after the commit cannot
//! fail a committed batch (the frame's rule), so a committed item is never re-run.
//!
//! A batch holds the items of any tenants: they are locked in id order, and each tenant's
//! items are decided in arrival order.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::records::{charge_rows, hold_rows, Charge, Hold};
use crate::db::Rows;
use crate::error::{AppError, AppResult, AutoTopUpHint, Shortfall};
use crate::frame::{Books, Frame, Movement, Response, Staged};
use crate::idempotency::{Claim, Claimed, Stored};
use crate::ids::new_id;
use crate::ledger::{Account, Draft, Funding, Locked, TxnKind};
use crate::money::Money;
use crate::pricing::{self, PriceRule, TenantPricing};
use crate::services::accounts::prices;
use crate::services::limits::store::{Budget, Budgets};
use crate::services::money_in::auto_top_up;
use crate::vocab::HoldStatus;

/// How an amount is decided: given, or priced (the deal is applied inside the batch, under
/// the tenant's lock, so estimate and charge use the same inputs).
#[derive(Debug, Clone)]
pub enum Price {
    Amount(Money),
    Model { model: String, version: i32, rule: Arc<PriceRule>, usage: Value },
}

#[derive(Debug, Clone)]
pub enum SpendKind {
    Charge { metadata: Option<Value> },
    Hold { expires_at: DateTime<Utc> },
}

/// One validated charge or hold, ready for a batch.
#[derive(Debug, Clone)]
pub struct Spend {
    pub tenant_id: Uuid,
    pub kind: SpendKind,
    pub price: Price,
    pub description: Option<String>,
    pub api_key_id: Option<Uuid>,
}

/// A charge or hold waiting for its batch, with where to send its answer.
pub struct Item {
    pub spend: Spend,
    pub claim: Claim,
    pub reply: oneshot::Sender<AppResult<Stored>>,
}

/// What an item asks, shared so that a failed batch can be retried item by item.
struct Request {
    spend: Spend,
    claim: Claim,
}

/// Runs `items` as one movement and answers each of them.
pub async fn run(frame: &Frame, credits_per_usd: Decimal, items: Vec<Item>) {
    let (requests, replies): (Vec<Request>, Vec<_>) =
        items.into_iter().map(|i| (Request { spend: i.spend, claim: i.claim }, i.reply)).unzip();
    let requests: Arc<[Request]> = requests.into();
    let all: Vec<usize> = (0..requests.len()).collect();
    match frame.run(Batch::new(requests.clone(), all, credits_per_usd)).await {
        Ok(answers) => {
            crate::meters::charge_batch(answers.len());
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(e) if requests.len() > 1 => {
            let size = requests.len();
            tracing::warn!(error = %e, size, "batch failed; retrying its items one by one");
            for (i, reply) in replies.into_iter().enumerate() {
                let alone = frame.run(Batch::new(requests.clone(), vec![i], credits_per_usd)).await;
                let answer =
                    alone.and_then(|mut v| v.pop().unwrap_or_else(|| Err(AppError::internal("empty batch result"))));
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// The movement: `which` requests, in arrival order.
struct Batch {
    requests: Arc<[Request]>,
    which: Vec<usize>,
    credits_per_usd: Decimal,
    /// One answer per position in `which`, filled in as each is known.
    out: Vec<Option<AppResult<Stored>>>,
    decided: Vec<Decided>,
    /// Items that did not fit: (position, required, available when decided).
    refused: Vec<(usize, Money, Money)>,
    /// The spend limits the items count toward, moved by each decision.
    budgets: Budgets,
    /// The rows `write` built, for the posting statement to insert.
    charges: Vec<Charge>,
    holds: Vec<Hold>,
}

/// An item that passed every check, with what it will write.
struct Decided {
    pos: usize,
    /// The charge's or hold's id, chosen when decided.
    id: Uuid,
    amount: Money,
    funding: Funding,
    price_version: Option<i32>,
    model: Option<String>,
    usage: Option<serde_json::Value>,
    staged: Staged,
}

/// What one item comes to, decided under the lock.
enum Verdict {
    Take { amount: Money, funding: Funding, price_version: Option<i32>, model: Option<String> },
    Short { required: Money, available: Money },
    Refuse(AppError),
}

impl Batch {
    fn new(requests: Arc<[Request]>, which: Vec<usize>, credits_per_usd: Decimal) -> Batch {
        let out = which.iter().map(|_| None).collect();
        let budgets = Budgets::default();
        Batch {
            requests,
            which,
            credits_per_usd,
            out,
            decided: Vec::new(),
            refused: Vec::new(),
            budgets,
            charges: Vec::new(),
            holds: Vec::new(),
        }
    }

    fn request(&self, pos: usize) -> &Request {
        &self.requests[self.which[pos]]
    }

    fn open(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.which.len()).filter(|p| self.out[*p].is_none())
    }
}

impl Movement for Batch {
    type Output = Vec<AppResult<Stored>>;
    const WRITES_WITH_POSTING: bool = true;

    fn tenants(&self) -> Vec<Uuid> {
        self.open().map(|p| self.request(p).spend.tenant_id).collect()
    }

    fn claims(&self) -> Vec<&Claim> {
        self.which.iter().map(|i| &self.requests[*i].claim).collect()
    }

    fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        for (slot, claim) in self.out.iter_mut().zip(results) {
            match claim {
                Ok(None) => {}
                Ok(Some(replay)) => *slot = Some(Ok(replay)),
                Err(e) => *slot = Some(Err(e)),
            }
        }
        Ok(self.open().next().is_some())
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        // Reads first: each tenant's deal (only for priced items), then in one statement
        // the API keys named and every limit the items count toward.
        let now = books.now;
        let mut deals = HashMap::new();
        let mut tenants = self.tenants();
        tenants.sort_unstable();
        tenants.dedup();
        for t in &tenants {
            let priced = self.open().any(|p| {
                let s = &self.request(p).spend;
                s.tenant_id == *t && matches!(s.price, Price::Model { .. })
            });
            deals.insert(*t, if priced { prices::deal(tx, *t).await? } else { None });
        }
        let mut named: Vec<(Uuid, Uuid)> = self
            .open()
            .filter_map(|p| self.request(p).spend.api_key_id.map(|k| (self.request(p).spend.tenant_id, k)))
            .collect();
        named.sort_unstable();
        named.dedup();
        // Tenants with limits of their own say so in their lock's row: a batch that names
        // no key for a tenant without limits reads nothing more.
        let limited: Vec<Uuid> =
            tenants.iter().copied().filter(|t| books.get(*t).is_some_and(|l| l.spend_limited)).collect();
        if !named.is_empty() || !limited.is_empty() {
            self.budgets = Budgets::load(tx, &limited, &named, now).await?;
        }
        // Then each item in arrival order, against what the ones before it left.
        let open: Vec<usize> = self.open().collect();
        for pos in open {
            let spend = &self.requests[self.which[pos]].spend;
            let Some(locked) = books.get_mut(spend.tenant_id) else {
                self.out[pos] = Some(Err(AppError::NotFound));
                continue;
            };
            let deal = deals.get(&spend.tenant_id).and_then(Option::as_ref);
            let budget = self.budgets.tenant(spend.tenant_id);
            match decide_item(locked, spend, deal, budget) {
                Verdict::Refuse(e) => self.out[pos] = Some(Err(e)),
                Verdict::Short { required, available } => self.refused.push((pos, required, available)),
                Verdict::Take { amount, funding, price_version, model } => {
                    let id = new_id();
                    let draft = spend_draft(spend, id, amount, &funding, model.as_deref(), now);
                    let staged = books.stage(spend.tenant_id, draft)?;
                    let usage = match &spend.price {
                        Price::Model { usage, .. } => Some(usage.clone()),
                        Price::Amount(_) => None,
                    };
                    self.decided.push(Decided { pos, id, amount, funding, price_version, model, usage, staged });
                }
            }
        }
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        let (mut charges, mut holds) = (Vec::new(), Vec::new());
        let mut responses = Vec::with_capacity(self.decided.len());
        for d in &self.decided {
            let spend = &self.request(d.pos).spend;
            let locked = books.locked(spend.tenant_id)?;
            let draft = books.draft(d.staged);
            let after = books.posted(d.staged)?.after;
            let body = match &spend.kind {
                SpendKind::Charge { metadata } => {
                    let charge = Charge {
                        tenant_id: spend.tenant_id,
                        id: d.id,
                        transaction_id: draft.id,
                        amount: d.amount,
                        funding: d.funding.clone(),
                        model: d.model.clone(),
                        price_version: d.price_version,
                        usage: d.usage.clone(),
                        description: draft.description.clone(),
                        metadata: metadata.clone(),
                        api_key_id: spend.api_key_id,
                        hold_id: None,
                        after,
                        created_at: draft.created_at,
                    };
                    let body = charge.view(&locked.currency, self.credits_per_usd, Money::ZERO);
                    charges.push(charge);
                    serde_json::to_vec(&body)
                }
                SpendKind::Hold { expires_at } => {
                    let hold = Hold {
                        tenant_id: spend.tenant_id,
                        id: d.id,
                        amount: d.amount,
                        funding: d.funding.clone(),
                        status: HoldStatus::Active,
                        model: d.model.clone(),
                        price_version: d.price_version,
                        usage: d.usage.clone(),
                        description: draft.description.clone(),
                        api_key_id: spend.api_key_id,
                        expires_at: *expires_at,
                        created_at: draft.created_at,
                        resolved_at: None,
                        charge_id: None,
                    };
                    let body = hold.view(&locked.currency, None);
                    holds.push(hold);
                    serde_json::to_vec(&body)
                }
            };
            let stored =
                Stored { status: StatusCode::CREATED, body: body.map_err(AppError::internal)?, replayed: false };
            responses.push(Response { claim: d.pos, stored });
        }
        (self.charges, self.holds) = (charges, holds);
        self.budgets.save(tx, books.now).await?;
        // A refusal tells whether auto top-up is on its way: read here, before the commit,
        // so nothing after the commit can fail the batch.
        let mut hints = HashMap::new();
        for (pos, required, available) in std::mem::take(&mut self.refused) {
            let tenant = self.request(pos).spend.tenant_id;
            let hint = match hints.get(&tenant) {
                Some(h) => *h,
                None => *hints.entry(tenant).or_insert(auto_top_up::hint(&mut *tx, tenant).await?),
            };
            self.out[pos] = Some(Err(shortfall(books.locked(tenant)?, required, available, hint)));
        }
        Ok(responses)
    }

    fn rows(&self) -> Vec<Rows<'_>> {
        vec![charge_rows(&self.charges), hold_rows(&self.holds)]
    }

    fn finish(mut self, stored: Vec<Response>) -> AppResult<Vec<AppResult<Stored>>> {
        for r in stored {
            self.out[r.claim] = Some(Ok(r.stored));
        }
        Ok(self.out.into_iter().map(|o| o.unwrap_or_else(|| Err(AppError::internal("undecided batch item")))).collect())
    }
}

/// One item's decision against the tenant's funds and spend limits as the items before it
/// left them, in this order: the tenant active, the key its own, the model allowed for the
/// key, the price, the balance (`insufficient_funds` first), then the limits. On `Take` the
/// funds are spent and the limits count it; on anything else nothing changes (but a limit
/// that refuses marks its `spend_limit.reached` as due).
fn decide_item(locked: &mut Locked, s: &Spend, deal: Option<&TenantPricing>, budget: &mut Budget) -> Verdict {
    if !locked.is_active() {
        return Verdict::Refuse(AppError::Forbidden("the tenant is suspended".into()));
    }
    if s.api_key_id.is_some_and(|k| budget.key(k).is_none()) {
        return Verdict::Refuse(AppError::unprocessable("api_key_id does not name a key of this tenant"));
    }
    if let Price::Model { model, .. } = &s.price {
        if !budget.model_allowed(s.api_key_id, Some(model)) {
            return Verdict::Refuse(AppError::ModelNotAllowed(format!("this API key may not use the model `{model}`")));
        }
    }
    let (amount, price_version, model) = match &s.price {
        Price::Amount(a) => (*a, None, None),
        Price::Model { model, version, rule, usage } => match pricing::quote(model, rule, deal, usage) {
            Ok(q) => (q.amount, Some(*version), Some(model.clone())),
            Err(e) => return Verdict::Refuse(e.into()),
        },
    };
    if !amount.is_positive() {
        return Verdict::Refuse(AppError::unprocessable("this usage costs nothing: there is nothing to charge"));
    }
    let available = locked.funds.available();
    if amount > available {
        return Verdict::Short { required: amount, available };
    }
    if let Err(e) = budget.admit(s.api_key_id, amount, &locked.currency) {
        return Verdict::Refuse(e);
    }
    match locked.funds.spend(amount) {
        Ok(funding) => Verdict::Take { amount, funding, price_version, model },
        Err(available) => Verdict::Refuse(AppError::internal(format!("{amount} fitted {available} and then did not"))),
    }
}

fn shortfall(locked: &Locked, required: Money, available: Money, hint: AutoTopUpHint) -> AppError {
    AppError::InsufficientFunds(Box::new(Shortfall {
        required,
        available,
        shortfall: required.checked_sub(available).unwrap_or(required),
        currency: locked.currency.clone(),
        auto_top_up: hint,
    }))
}

fn spend_draft(
    s: &Spend,
    id: Uuid,
    amount: Money,
    funding: &Funding,
    model: Option<&str>,
    now: DateTime<Utc>,
) -> Draft {
    // A charge pays revenue; a hold moves the money into `held` until it is resolved.
    let (kind, label, reference, to) = match &s.kind {
        SpendKind::Charge { .. } => {
            (TxnKind::Usage, "Usage", json!({ "charge_id": id, "model": model }), Account::Revenue)
        }
        SpendKind::Hold { .. } => (TxnKind::Hold, "Hold", json!({ "hold_id": id, "model": model }), Account::Held),
    };
    Draft::new(kind, now)
        .description(s.description.clone().or_else(|| model.map(|m| format!("{label}: {m}"))))
        .reference(reference)
        .api_key(s.api_key_id)
        .debit_funding(funding)
        .entry(to, amount)
}

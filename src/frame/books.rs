//! The locked ledgers of one movement, and the drafts it stages on them.
//!
//! [`lock`] is the service's one lock entry point: it takes every tenant's ledger lock in
//! one statement, in tenant-id order (so two movements over the same tenants can never
//! deadlock) and, under each, first expires any bonus lot already past its expiry that no worker has swept yet,
//! with its `credits.expired` event. Every figure computed under the lock (totals,
//! `balance_after`) therefore leaves expired credit out.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::Rows;
use crate::error::{AppError, AppResult};
use crate::ledger::{self, Account, Draft, Entry, Locked, Posted, Postings, TxnKind};
use crate::money::Money;
use crate::services::notify::events::{self, EventType};

/// A staged draft: which ledger, which position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    ledger: usize,
    index: usize,
}

/// One locked tenant: its ledger, `available` as the row stood when locked, and what this
/// movement stages and posts on it.
struct Ledger {
    locked: Locked,
    available_before: Money,
    swept: usize,
    drafts: Vec<Draft>,
    posted: Vec<Posted>,
}

pub struct Books {
    /// When the movement runs: the time its decisions use.
    pub now: DateTime<Utc>,
    /// In tenant-id order.
    ledgers: Vec<Ledger>,
    /// Applied in memory, not yet written.
    postings: Option<Postings>,
}

/// Locks `tenants` (sorted, each once) and sweeps their expired lots; `now` (the
/// application's clock) is the time the movement decides at.
pub async fn lock(conn: &mut PgConnection, mut tenants: Vec<Uuid>, now: DateTime<Utc>) -> AppResult<Books> {
    tenants.sort_unstable();
    tenants.dedup();
    let mut ledgers = Vec::with_capacity(tenants.len());
    for mut locked in ledger::lock_all(conn, &tenants, now).await? {
        let available_before = locked.balances.available()?;
        let swept = if locked.expired_unswept.is_positive() { sweep(conn, &mut locked, now).await? } else { 0 };
        ledgers.push(Ledger { locked, available_before, swept, drafts: Vec::new(), posted: Vec::new() });
    }
    Ok(Books { now, ledgers, postings: None })
}

impl Books {
    fn find(&self, tenant: Uuid) -> Option<usize> {
        self.ledgers.binary_search_by_key(&tenant, |l| l.locked.tenant_id).ok()
    }

    /// The tenant's locked ledger; `None`: no such tenant.
    pub fn get(&self, tenant: Uuid) -> Option<&Locked> {
        self.find(tenant).map(|i| &self.ledgers[i].locked)
    }

    /// The same, to spend from its funds while deciding.
    pub fn get_mut(&mut self, tenant: Uuid) -> Option<&mut Locked> {
        self.find(tenant).map(|i| &mut self.ledgers[i].locked)
    }

    /// The tenant's ledger, or 404.
    pub fn locked(&self, tenant: Uuid) -> AppResult<&Locked> {
        self.get(tenant).ok_or(AppError::NotFound)
    }

    /// How many expired lots the lock swept for `tenant`.
    pub fn swept(&self, tenant: Uuid) -> usize {
        self.find(tenant).map_or(0, |i| self.ledgers[i].swept)
    }

    /// Stages `draft` for `tenant`'s ledger; the frame posts it after the decision, in
    /// staging order.
    pub fn stage(&mut self, tenant: Uuid, draft: Draft) -> AppResult<Staged> {
        let ledger = self.find(tenant).ok_or(AppError::NotFound)?;
        let drafts = &mut self.ledgers[ledger].drafts;
        drafts.push(draft);
        Ok(Staged { ledger, index: drafts.len() - 1 })
    }

    pub fn draft(&self, s: Staged) -> &Draft {
        &self.ledgers[s.ledger].drafts[s.index]
    }

    /// The posted transaction of a staged draft (after the frame posted it).
    pub fn posted(&self, s: Staged) -> AppResult<&Posted> {
        self.ledgers[s.ledger].posted.get(s.index).ok_or_else(|| AppError::internal("draft not posted"))
    }

    /// Moves every tenant's balances with its staged drafts, in memory
    /// (`ledger::post::apply`): from here on [`Books::posted`] answers, and
    /// [`Books::write_staged`] writes the rows.
    pub(super) fn apply_staged(&mut self) -> AppResult<()> {
        let staged = self.ledgers.iter_mut().map(|l| (&mut l.locked, l.drafts.as_slice())).collect();
        let (postings, posted) = ledger::post::apply(staged)?;
        for (l, p) in self.ledgers.iter_mut().zip(posted) {
            l.posted = p;
        }
        self.postings = Some(postings);
        Ok(())
    }

    /// Writes what [`Books::apply_staged`] moved, every tenant's in one statement, with
    /// `riders` (the movement's own rows, its idempotency keys) in that same statement.
    pub(super) async fn write_staged(&mut self, conn: &mut PgConnection, riders: Vec<Rows<'_>>) -> AppResult<()> {
        let postings = self.postings.take().ok_or_else(|| AppError::internal("drafts written before applied"))?;
        let written: Vec<ledger::Written> =
            self.ledgers.iter().map(|l| (l.locked.tenant_id, l.drafts.as_slice(), l.posted.as_slice())).collect();
        ledger::post::write(conn, postings, &written, riders).await?;
        Ok(())
    }

    /// The kind of every ledger transaction this movement posted (swept expiries included).
    pub(super) fn posted_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.ledgers.iter().flat_map(|l| {
            let expiries = std::iter::repeat_n(TxnKind::Expiry.as_str(), l.swept);
            expiries.chain(l.drafts.iter().map(|d| d.kind.as_str()))
        })
    }

    /// Each tenant's `available` when locked and now.
    pub(super) fn moved(&self) -> AppResult<Vec<(Uuid, Money, Money)>> {
        self.ledgers
            .iter()
            .map(|l| Ok((l.locked.tenant_id, l.available_before, l.locked.balances.available()?)))
            .collect()
    }
}

/// Posts the expiry of every due lot of a locked tenant, with its `credits.expired` event.
async fn sweep(conn: &mut PgConnection, locked: &mut Locked, now: DateTime<Utc>) -> AppResult<usize> {
    let tenant = locked.tenant_id;
    let due: Vec<(Uuid, Decimal, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, remaining, expires_at FROM bonus_lots WHERE tenant_id = $1 AND remaining > 0 AND expires_at <= $2",
    )
    .bind(tenant)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let drafts: Vec<Draft> = due
        .iter()
        .map(|(lot, remaining, expires_at)| {
            let amount = Money::from_db(*remaining);
            let mut d = Draft::new(TxnKind::Expiry, now)
                .description(Some("Bonus credit expired".into()))
                .reference(json!({ "lot_id": lot, "expires_at": expires_at }))
                .actor("system");
            d.entries.push(Entry { account: Account::Bonus, amount: -amount, lot: Some(*lot) });
            d.entry(Account::Expired, amount)
        })
        .collect();
    ledger::post(conn, locked, &drafts).await?;
    locked.expired_unswept = Money::ZERO;
    let amount = Money::checked_sum(due.iter().map(|(_, r, _)| Money::from_db(*r)))
        .ok_or_else(|| AppError::internal("expiry sum overflow"))?;
    let lots: Vec<_> =
        due.iter().map(|(lot, r, e)| json!({ "lot_id": lot, "amount": Money::from_db(*r), "expires_at": e })).collect();
    let data = json!({ "amount": amount, "currency": locked.currency, "lots": lots });
    events::emit(conn, tenant, EventType::CreditsExpired, data).await?;
    Ok(drafts.len())
}

//! Posting: writes drafts as ledger rows and moves the cached balances with them.
//!
//! A whole batch of drafts, for one tenant or many, is written in a fixed number of
//! statements, whatever the batch size and the number of tenants: that is what makes
//! group commit pay. Posting has two halves: [`apply`] moves the balances in memory and
//! gives each draft its "balance after"; [`write`] writes the rows, and can carry the
//! movement's other rows in the same statement ([`Rows`] riders). [`post_all`] does both.
//!
//! "Balance after" is computed here and only here: each draft moves the locked tenant's
//! [`Balances`], and its [`Posted::after`] is read from them.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use std::fmt::Write as _;

use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use sqlx::Arguments;

use super::{Account, Draft, Entry, Locked};
use crate::db::Rows;
use crate::money::Money;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("unbalanced transaction {0}: entries sum to {1}")]
    Unbalanced(Uuid, Money),
    #[error("transaction {0} has fewer than two entries")]
    TooFewEntries(Uuid),
    #[error("a posting would take a balance below zero")]
    WouldOverdraw,
    #[error("a balance would leave the range of money")]
    OutOfRange,
    #[error("bonus lot {0} is unknown")]
    UnknownLot(Uuid),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<LedgerError> for crate::error::AppError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Db(e) => e.into(),
            // A request's own amounts (an adjustment, a top-up) can carry a balance past the
            // range of money: the client's to fix, and nothing was written.
            LedgerError::OutOfRange => crate::error::AppError::unprocessable(
                "this would take a balance past the largest amount the ledger holds (1000000000000)",
            ),
            other => crate::error::AppError::internal(other),
        }
    }
}

/// A tenant's cached balances (the `balances` row), as they stand in this transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balances {
    pub paid: Money,
    pub bonus: Money,
    pub held: Money,
}

impl Balances {
    /// `paid + bonus`. Under the frame's lock expired lots are swept first, so this is
    /// what the tenant may spend.
    pub fn available(&self) -> Result<Money, LedgerError> {
        self.paid.checked_add(self.bonus).ok_or(LedgerError::OutOfRange)
    }

    pub fn summary(&self) -> Result<BalanceSummary, LedgerError> {
        let available = self.available()?;
        Ok(BalanceSummary { total: available.checked_add(self.held).ok_or(LedgerError::OutOfRange)?, available })
    }

    fn apply(&mut self, account: Account, amount: Money) -> Result<(), LedgerError> {
        let slot = match account {
            Account::Paid => &mut self.paid,
            Account::Bonus => &mut self.bonus,
            Account::Held => &mut self.held,
            _ => return Ok(()),
        };
        *slot = slot.checked_add(amount).ok_or(LedgerError::OutOfRange)?;
        Ok(())
    }

    fn minus(&self, before: &Balances) -> Result<[Decimal; 3], LedgerError> {
        let d = |a: Money, b: Money| a.checked_sub(b).map(Money::as_decimal).ok_or(LedgerError::OutOfRange);
        Ok([d(self.paid, before.paid)?, d(self.bonus, before.bonus)?, d(self.held, before.held)?])
    }
}

/// The short form of a balance embedded in responses: right after a posting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BalanceSummary {
    /// `available + held`: all the tenant owns.
    pub total: Money,
    /// `paid + bonus`: what a new charge may use.
    pub available: Money,
}

/// A posted transaction: its id and the tenant's balance right after it.
#[derive(Debug, Clone, Copy)]
pub struct Posted {
    pub id: Uuid,
    pub after: BalanceSummary,
}

/// Posts `drafts`, in order, for the locked tenant, and moves `locked.balances` with them.
pub async fn post(conn: &mut PgConnection, locked: &mut Locked, drafts: &[Draft]) -> Result<Vec<Posted>, LedgerError> {
    Ok(post_all(conn, vec![(locked, drafts)]).await?.pop().unwrap_or_default())
}

/// Posts each locked tenant's drafts, in order, and moves its balances with them: one
/// statement for the balances, transactions and entries of every tenant (and one each
/// for new and spent bonus lots, when there are any), whatever the number of tenants.
/// The answer holds each tenant's [`Posted`], in the order given.
pub async fn post_all(
    conn: &mut PgConnection,
    ledgers: Vec<(&mut Locked, &[Draft])>,
) -> Result<Vec<Vec<Posted>>, LedgerError> {
    let tenants: Vec<Uuid> = ledgers.iter().map(|(l, _)| l.tenant_id).collect();
    let drafts: Vec<&[Draft]> = ledgers.iter().map(|(_, d)| *d).collect();
    let (postings, posted) = apply(ledgers)?;
    let written: Vec<Written> =
        tenants.iter().zip(&drafts).zip(&posted).map(|((t, d), p)| (*t, *d, p.as_slice())).collect();
    write(conn, postings, &written, Vec::new()).await?;
    Ok(posted)
}

/// What a posting moves, known before any row is written: each tenant's net change of
/// its balances and of its bonus lots.
#[derive(Debug, Default)]
pub struct Postings {
    moved: Vec<(Uuid, [Decimal; 3])>,
    lot_delta: HashMap<(Uuid, Uuid), Decimal>,
}

/// The first half of posting, in memory: checks each draft (balanced, two entries or
/// more), moves each locked tenant's balances with its drafts in order, and gives every
/// draft's [`Posted`] ("balance after"), so that responses can be built before the rows
/// are written by [`write`].
pub fn apply(ledgers: Vec<(&mut Locked, &[Draft])>) -> Result<(Postings, Vec<Vec<Posted>>), LedgerError> {
    let mut postings = Postings::default();
    let mut all = Vec::with_capacity(ledgers.len());
    for (locked, drafts) in ledgers {
        let tenant = locked.tenant_id;
        let before = locked.balances;
        // The lock guarantees nobody else moved the row: each balance follows from the last.
        let mut posted = Vec::with_capacity(drafts.len());
        for d in drafts {
            if d.entries.len() < 2 {
                return Err(LedgerError::TooFewEntries(d.id));
            }
            let sum = Money::checked_sum(d.entries.iter().map(|e| e.amount)).ok_or(LedgerError::OutOfRange)?;
            if !sum.is_zero() {
                return Err(LedgerError::Unbalanced(d.id, sum));
            }
            for e in d.entries.iter().filter(|e| e.account.is_tenant_owned()) {
                locked.balances.apply(e.account, e.amount)?;
                if let Some(lot) = e.lot {
                    *postings.lot_delta.entry((tenant, lot)).or_insert(Decimal::ZERO) += e.amount.as_decimal();
                }
            }
            posted.push(Posted { id: d.id, after: locked.balances.summary()? });
        }
        if !drafts.is_empty() {
            postings.moved.push((tenant, locked.balances.minus(&before)?));
        }
        all.push(posted);
    }
    Ok((postings, all))
}

/// Each tenant's drafts and what [`apply`] gave them.
pub type Written<'a> = (Uuid, &'a [Draft], &'a [Posted]);

/// The second half of posting: writes the rows of what [`apply`] moved (bonus lots first,
/// when any, then the balances, transactions and entries in one statement). `riders` are
/// other rows of the same movement (its own records, its idempotency keys): the same
/// statement inserts them, so they cost no round trip of their own.
pub async fn write(
    conn: &mut PgConnection,
    postings: Postings,
    all: &[Written<'_>],
    riders: Vec<Rows<'_>>,
) -> Result<(), LedgerError> {
    let riders: Vec<Rows<'_>> = riders.into_iter().filter(|r| !r.is_empty()).collect();
    if postings.moved.is_empty() {
        for r in riders {
            r.insert(conn).await?;
        }
        return Ok(());
    }
    let mut lot_delta = postings.lot_delta;
    insert_new_lots(conn, all, &mut lot_delta).await?;
    update_lots(conn, &lot_delta).await?;
    insert_rows(conn, &postings.moved, all, riders).await
}

fn overdraw(e: sqlx::Error) -> LedgerError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23514") => LedgerError::WouldOverdraw,
        _ => LedgerError::Db(e),
    }
}

/// New lots are inserted with the net of this batch's entries on them (usually the grant).
async fn insert_new_lots(
    conn: &mut PgConnection,
    all: &[Written<'_>],
    lot_delta: &mut HashMap<(Uuid, Uuid), Decimal>,
) -> Result<(), LedgerError> {
    let (mut tenants, mut ids, mut sources, mut granted, mut remaining, mut expires, mut txns, mut at) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (tenant, drafts, _) in all {
        for d in drafts.iter() {
            for l in &d.new_lots {
                tenants.push(*tenant);
                ids.push(l.id);
                sources.push(l.source.as_str());
                granted.push(l.amount.as_decimal());
                remaining.push(lot_delta.remove(&(*tenant, l.id)).ok_or(LedgerError::UnknownLot(l.id))?);
                expires.push(l.expires_at);
                txns.push(d.id);
                at.push(d.created_at);
            }
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO bonus_lots (tenant_id, id, source, granted, remaining, expires_at, transaction_id, created_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::numeric[], $6::timestamptz[], \
                              $7::uuid[], $8::timestamptz[])",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&sources)
    .bind(&granted)
    .bind(&remaining)
    .bind(&expires)
    .bind(&txns)
    .bind(&at)
    .execute(conn)
    .await
    .map_err(overdraw)?;
    Ok(())
}

async fn update_lots(conn: &mut PgConnection, lot_delta: &HashMap<(Uuid, Uuid), Decimal>) -> Result<(), LedgerError> {
    let (mut tenants, mut ids, mut deltas) = (vec![], vec![], vec![]);
    for ((tenant, lot), delta) in lot_delta.iter().filter(|(_, d)| !d.is_zero()) {
        tenants.push(*tenant);
        ids.push(*lot);
        deltas.push(*delta);
    }
    if ids.is_empty() {
        return Ok(());
    }
    let updated = sqlx::query(
        "UPDATE bonus_lots l SET remaining = l.remaining + d.delta \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::numeric[]) AS d(tenant_id, id, delta) \
         WHERE l.tenant_id = d.tenant_id AND l.id = d.id",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&deltas)
    .execute(conn)
    .await
    .map_err(overdraw)?;
    if updated.rows_affected() != ids.len() as u64 {
        return Err(LedgerError::UnknownLot(ids[0]));
    }
    Ok(())
}

/// Moves the cached balances of every tenant and inserts the transactions, their entries
/// and the riders in one statement (one round trip). The CHECKs on `balances` refuse an
/// overdraft, and the entries' foreign key is checked at the end of the statement, after
/// both inserts.
async fn insert_rows(
    conn: &mut PgConnection,
    moved: &[(Uuid, [Decimal; 3])],
    all: &[Written<'_>],
    riders: Vec<Rows<'_>>,
) -> Result<(), LedgerError> {
    let (txns, entries) = (txn_rows(all), entry_rows(all));
    // The balances take $1–$4; each set of rows is numbered after the ones before it.
    let mut sql = String::from(
        "WITH moved AS ( \
           UPDATE balances b SET paid = b.paid + d.paid, bonus = b.bonus + d.bonus, held = b.held + d.held \
           FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[]) AS d(tenant_id, paid, bonus, held) \
           WHERE b.tenant_id = d.tenant_id)",
    );
    let mut next = 5;
    for (i, r) in std::iter::once(&txns).chain(&riders).enumerate() {
        let _ = write!(sql, ", rows{i} AS ({})", r.cte(next));
        next += r.width();
    }
    let _ = write!(sql, " {}", entries.cte(next));
    let mut args = PgArguments::default();
    let col = |i: usize| moved.iter().map(|(_, d)| d[i]).collect::<Vec<Decimal>>();
    let encode = |r: Result<(), sqlx::error::BoxDynError>| r.map_err(|e| LedgerError::Db(sqlx::Error::Encode(e)));
    encode(args.add(moved.iter().map(|(t, _)| *t).collect::<Vec<Uuid>>()))?;
    for i in 0..3 {
        encode(args.add(col(i)))?;
    }
    for r in std::iter::once(txns).chain(riders).chain(std::iter::once(entries)) {
        encode(r.bind(&mut args))?;
    }
    sqlx::query_with(&sql, args).execute(conn).await.map_err(overdraw)?;
    Ok(())
}

/// The rows of `ledger_transactions` for every draft, with its total after.
fn txn_rows<'a>(all: &[Written<'a>]) -> Rows<'a> {
    let txns: Vec<(Uuid, &'a Draft, &'a Posted)> = all
        .iter()
        .flat_map(|(t, drafts, posted)| drafts.iter().zip(posted.iter()).map(move |(d, p)| (*t, d, p)))
        .collect();
    Rows::new(
        "INSERT INTO ledger_transactions \
           (tenant_id, id, kind, description, reference, actor, corrects, api_key_id, total_after, created_at)",
        txns.len(),
    )
    .column("uuid", txns.iter().map(|(t, _, _)| *t).collect())
    .column("uuid", txns.iter().map(|(_, d, _)| d.id).collect())
    .column("text", txns.iter().map(|(_, d, _)| d.kind.as_str()).collect())
    .column("text", txns.iter().map(|(_, d, _)| d.description.as_deref()).collect())
    .column("jsonb", txns.iter().map(|(_, d, _)| Json(&d.reference)).collect())
    .column("text", txns.iter().map(|(_, d, _)| d.actor.as_deref()).collect())
    .column("uuid", txns.iter().map(|(_, d, _)| d.corrects).collect())
    .column("uuid", txns.iter().map(|(_, d, _)| d.api_key_id).collect())
    .column("numeric", txns.iter().map(|(_, _, p)| p.after.total.as_decimal()).collect())
    .column("timestamptz", txns.iter().map(|(_, d, _)| d.created_at).collect())
}

/// The rows of `ledger_entries` for every draft, numbered by line within it.
fn entry_rows<'a>(all: &[Written<'a>]) -> Rows<'a> {
    let entries: Vec<(Uuid, &'a Draft, i16, &'a Entry)> = all
        .iter()
        .flat_map(|(t, drafts, _)| drafts.iter().map(move |d| (*t, d)))
        .flat_map(|(t, d)| d.entries.iter().enumerate().map(move |(i, e)| (t, d, i as i16, e)))
        .collect();
    Rows::new("INSERT INTO ledger_entries (tenant_id, transaction_id, line, account, amount, lot_id)", entries.len())
        .column("uuid", entries.iter().map(|(t, _, _, _)| *t).collect())
        .column("uuid", entries.iter().map(|(_, d, _, _)| d.id).collect())
        .column("int2", entries.iter().map(|(_, _, line, _)| *line).collect())
        .column("text", entries.iter().map(|(_, _, _, e)| e.account.as_str()).collect())
        .column("numeric", entries.iter().map(|(_, _, _, e)| e.amount.as_decimal()).collect())
        .column("uuid", entries.iter().map(|(_, _, _, e)| e.lot).collect())
}

//! Posting: writes drafts as ledger rows and moves the cached balances with them.
//!
//! A whole batch of drafts for one tenant is written in a fixed number of statements
//! (one per table), whatever the batch size: that is what makes group commit pay.

use std::collections::HashMap;

use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Account, Draft, Locked};
use crate::money::Money;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("unbalanced transaction {0}: entries sum to {1}")]
    Unbalanced(Uuid, Money),
    #[error("transaction {0} has fewer than two entries")]
    TooFewEntries(Uuid),
    #[error("a posting would take a balance below zero")]
    WouldOverdraw,
    #[error("bonus lot {0} is unknown")]
    UnknownLot(Uuid),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<LedgerError> for crate::error::AppError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Db(e) => e.into(),
            other => crate::error::AppError::internal(other),
        }
    }
}

/// A posted transaction: its id and the tenant's total right after it.
#[derive(Debug, Clone, Copy)]
pub struct Posted {
    pub id: Uuid,
    pub total_after: Money,
}

/// Posts `drafts`, in order, for the locked tenant. Returns the tenant's balances after.
pub async fn post(conn: &mut PgConnection, locked: &Locked, drafts: &[Draft]) -> Result<Vec<Posted>, LedgerError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let tenant = locked.tenant_id;
    let mut delta = HashMap::<Account, Decimal>::new();
    let mut lot_delta = HashMap::<Uuid, Decimal>::new();
    for d in drafts {
        if d.entries.len() < 2 {
            return Err(LedgerError::TooFewEntries(d.id));
        }
        let sum = Money::checked_sum(d.entries.iter().map(|e| e.amount)).unwrap_or(Money::MAX);
        if !sum.is_zero() {
            return Err(LedgerError::Unbalanced(d.id, sum));
        }
        for e in d.entries.iter().filter(|e| e.account.is_tenant_owned()) {
            *delta.entry(e.account).or_default() += e.amount.as_decimal();
            if let Some(lot) = e.lot {
                *lot_delta.entry(lot).or_default() += e.amount.as_decimal();
            }
        }
    }

    let total_after: Decimal = sqlx::query_scalar(
        "UPDATE balances SET paid = paid + $2, bonus = bonus + $3, held = held + $4 \
         WHERE tenant_id = $1 RETURNING paid + bonus + held",
    )
    .bind(tenant)
    .bind(delta.get(&Account::Paid).copied().unwrap_or_default())
    .bind(delta.get(&Account::Bonus).copied().unwrap_or_default())
    .bind(delta.get(&Account::Held).copied().unwrap_or_default())
    .fetch_one(&mut *conn)
    .await
    .map_err(overdraw)?;

    insert_new_lots(conn, tenant, drafts, &mut lot_delta).await?;
    update_lots(conn, tenant, &lot_delta).await?;

    // The total after each draft, walking back from the final total.
    let mut posted = Vec::with_capacity(drafts.len());
    let mut total = Money::from_db(total_after);
    for d in drafts.iter().rev() {
        posted.push(Posted { id: d.id, total_after: total });
        total = total.checked_sub(d.tenant_delta()).expect("totals fit NUMERIC(20,6)");
    }
    posted.reverse();
    insert_transactions(conn, tenant, drafts, &posted).await?;
    insert_entries(conn, tenant, drafts).await?;
    Ok(posted)
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
    tenant: Uuid,
    drafts: &[Draft],
    lot_delta: &mut HashMap<Uuid, Decimal>,
) -> Result<(), LedgerError> {
    let (mut ids, mut sources, mut granted, mut remaining, mut expires, mut txns, mut at) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for d in drafts {
        for l in &d.new_lots {
            ids.push(l.id);
            sources.push(l.source.as_str());
            granted.push(l.amount.as_decimal());
            remaining.push(lot_delta.remove(&l.id).unwrap_or_default());
            expires.push(l.expires_at);
            txns.push(d.id);
            at.push(d.created_at);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO bonus_lots (tenant_id, id, source, granted, remaining, expires_at, transaction_id, created_at) \
         SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::numeric[], $5::numeric[], $6::timestamptz[], $7::uuid[], $8::timestamptz[])",
    )
    .bind(tenant)
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

async fn update_lots(
    conn: &mut PgConnection,
    tenant: Uuid,
    lot_delta: &HashMap<Uuid, Decimal>,
) -> Result<(), LedgerError> {
    let (ids, deltas): (Vec<Uuid>, Vec<Decimal>) =
        lot_delta.iter().filter(|(_, d)| !d.is_zero()).map(|(k, v)| (*k, *v)).unzip();
    if ids.is_empty() {
        return Ok(());
    }
    let updated = sqlx::query(
        "UPDATE bonus_lots l SET remaining = l.remaining + d.delta \
         FROM UNNEST($2::uuid[], $3::numeric[]) AS d(id, delta) \
         WHERE l.tenant_id = $1 AND l.id = d.id",
    )
    .bind(tenant)
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

async fn insert_transactions(
    conn: &mut PgConnection,
    tenant: Uuid,
    drafts: &[Draft],
    posted: &[Posted],
) -> Result<(), LedgerError> {
    let n = drafts.len();
    let (mut ids, mut kinds, mut descs, mut refs, mut actors, mut corrects, mut keys, mut totals, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (d, p) in drafts.iter().zip(posted) {
        ids.push(d.id);
        kinds.push(d.kind.as_str());
        descs.push(d.description.as_deref());
        refs.push(sqlx::types::Json(&d.reference));
        actors.push(d.actor.as_deref());
        corrects.push(d.corrects);
        keys.push(d.api_key_id);
        totals.push(p.total_after.as_decimal());
        at.push(d.created_at);
    }
    sqlx::query(
        "INSERT INTO ledger_transactions \
           (tenant_id, id, kind, description, reference, actor, corrects, api_key_id, total_after, created_at) \
         SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::uuid[], \
                                  $8::uuid[], $9::numeric[], $10::timestamptz[])",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&kinds)
    .bind(&descs)
    .bind(&refs)
    .bind(&actors)
    .bind(&corrects)
    .bind(&keys)
    .bind(&totals)
    .bind(&at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_entries(conn: &mut PgConnection, tenant: Uuid, drafts: &[Draft]) -> Result<(), LedgerError> {
    let n: usize = drafts.iter().map(|d| d.entries.len()).sum();
    let (mut txns, mut lines, mut accounts, mut amounts, mut lots) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for d in drafts {
        for (i, e) in d.entries.iter().enumerate() {
            txns.push(d.id);
            lines.push(i as i16);
            accounts.push(e.account.as_str());
            amounts.push(e.amount.as_decimal());
            lots.push(e.lot);
        }
    }
    sqlx::query(
        "INSERT INTO ledger_entries (tenant_id, transaction_id, line, account, amount, lot_id) \
         SELECT $1, * FROM UNNEST($2::uuid[], $3::int2[], $4::text[], $5::numeric[], $6::uuid[])",
    )
    .bind(tenant)
    .bind(&txns)
    .bind(&lines)
    .bind(&accounts)
    .bind(&amounts)
    .bind(&lots)
    .execute(conn)
    .await?;
    Ok(())
}

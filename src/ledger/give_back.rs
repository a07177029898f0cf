//! Returning money to the lots it came from (releases, refunds).
//!
//! A lot keeps its original expiry: money returned to a lot that has expired in the
//! meantime expires at once, in a separate `expiry` transaction, so the history shows
//! both the return and the expiry.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Account, Draft, Funding, TxnKind};
use crate::money::Money;

/// Adds the return of `funding` to `draft`, and builds the expiry of any part that went
/// back to an expired lot. Returns `(draft, expiry)`.
pub async fn give_back(
    conn: &mut PgConnection,
    tenant: Uuid,
    draft: Draft,
    funding: &Funding,
    now: DateTime<Utc>,
) -> Result<(Draft, Option<Draft>), sqlx::Error> {
    let draft = draft.credit_funding(funding);
    if funding.lots.is_empty() {
        return Ok((draft, None));
    }
    let ids: Vec<Uuid> = funding.lots.iter().map(|p| p.lot).collect();
    let expiries: HashMap<Uuid, Option<DateTime<Utc>>> = sqlx::query_as::<_, (Uuid, Option<DateTime<Utc>>)>(
        "SELECT id, expires_at FROM bonus_lots WHERE tenant_id = $1 AND id = ANY($2)",
    )
    .bind(tenant)
    .bind(&ids)
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect();
    let expired: Vec<_> =
        funding.lots.iter().filter(|p| expiries.get(&p.lot).copied().flatten().is_some_and(|e| e <= now)).collect();
    if expired.is_empty() {
        return Ok((draft, None));
    }
    let total = Money::checked_sum(expired.iter().map(|p| p.amount)).expect("parts of a valid amount");
    let mut expiry = Draft::new(TxnKind::Expiry, now)
        .description(Some("Returned bonus credit had already expired".into()))
        .reference(json!({ "returned_by": draft.id }))
        .actor("system");
    for p in expired {
        expiry.entries.push(super::Entry { account: Account::Bonus, amount: -p.amount, lot: Some(p.lot) });
    }
    Ok((draft, Some(expiry.entry(Account::Expired, total))))
}

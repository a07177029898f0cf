//! Read models over the ledger: transaction history (JSON or CSV) and usage views.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::days;
use crate::error::{AppError, AppResult};
use crate::ledger::{Account, Draft, TxnKind};
use crate::money::Money;
use crate::services::{Page, PageParams};

/// One ledger transaction as the tenant sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TransactionView {
    pub id: Uuid,
    pub kind: TxnKind,
    /// What moved in or out of the tenant's `total` (for holds and releases: in or out of `available`).
    pub amount: Money,
    /// `credit` or `debit`.
    pub direction: &'static str,
    /// The tenant's `total` right after this transaction.
    pub balance_after: Money,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub reference: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

fn amount_direction(net: Money, held: Money) -> (Money, &'static str) {
    if !net.is_zero() {
        (net.abs(), if net.is_positive() { "credit" } else { "debit" })
    } else {
        // Money moved between available and held: a hold takes it out of available.
        (held.abs(), if held.is_positive() { "debit" } else { "credit" })
    }
}

impl TransactionView {
    pub fn from_draft(d: &Draft, total_after: Money) -> AppResult<TransactionView> {
        let held = Money::checked_sum(d.entries.iter().filter(|e| e.account == Account::Held).map(|e| e.amount))
            .ok_or_else(|| AppError::internal("held entries overflow"))?;
        let (amount, direction) = amount_direction(d.tenant_delta(), held);
        Ok(TransactionView {
            id: d.id,
            kind: d.kind,
            amount,
            direction,
            balance_after: total_after,
            description: d.description.clone(),
            reference: d.reference.clone(),
            api_key_id: d.api_key_id,
            created_at: d.created_at,
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TransactionFilter {
    pub kind: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub api_key_id: Option<Uuid>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

type TxnRow = (Uuid, TxnKind, Option<String>, Value, Decimal, DateTime<Utc>, Option<Uuid>, Decimal, Decimal);

pub async fn transactions(pool: &PgPool, tenant_id: Uuid, f: &TransactionFilter) -> AppResult<Page<TransactionView>> {
    let kind = f
        .kind
        .as_deref()
        .map(|k| TxnKind::parse(k).ok_or_else(|| AppError::invalid(format!("unknown kind {k:?}"))))
        .transpose()?;
    let page = PageParams { limit: f.limit, cursor: f.cursor.clone() };
    let limit = page.limit()?;
    exists(pool, tenant_id).await?;
    let rows: Vec<TxnRow> = sqlx::query_as(
        "SELECT t.id, t.kind, t.description, t.reference, t.total_after, t.created_at, t.api_key_id, \
                COALESCE(e.net, 0), COALESCE(e.held, 0) \
         FROM ledger_transactions t \
         LEFT JOIN LATERAL ( \
           SELECT sum(amount) FILTER (WHERE account IN ('paid', 'bonus', 'held')) AS net, \
                  sum(amount) FILTER (WHERE account = 'held') AS held \
           FROM ledger_entries e WHERE e.tenant_id = t.tenant_id AND e.transaction_id = t.id) e ON true \
         WHERE t.tenant_id = $1 AND ($2::text IS NULL OR t.kind = $2) \
           AND ($3::timestamptz IS NULL OR t.created_at >= $3) AND ($4::timestamptz IS NULL OR t.created_at < $4) \
           AND ($5::uuid IS NULL OR t.api_key_id = $5) AND ($6::uuid IS NULL OR t.id < $6) \
         ORDER BY t.id DESC LIMIT $7",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(f.from)
    .bind(f.to)
    .bind(f.api_key_id)
    .bind(page.cursor()?)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let views = rows
        .into_iter()
        .map(|(id, kind, description, reference, total_after, created_at, api_key_id, net, held)| {
            let (amount, direction) = amount_direction(Money::from_db(net), Money::from_db(held));
            TransactionView {
                id,
                kind,
                amount,
                direction,
                balance_after: Money::from_db(total_after),
                description,
                reference,
                api_key_id,
                created_at,
            }
        })
        .collect();
    Ok(Page::from_rows(views, limit, |v| v.id))
}

/// The same rows as CSV, header first.
pub fn to_csv(rows: &[TransactionView]) -> String {
    let mut out = String::from("id,kind,amount,direction,balance_after,description,api_key_id,created_at,reference\n");
    for r in rows {
        let fields = [
            r.id.to_string(),
            r.kind.as_str().to_string(),
            r.amount.to_string(),
            r.direction.to_string(),
            r.balance_after.to_string(),
            r.description.clone().unwrap_or_default(),
            r.api_key_id.map(|k| k.to_string()).unwrap_or_default(),
            r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            r.reference.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    // A leading =, +, - or @ would run as a formula in a spreadsheet, and so may one after a
    // leading TAB or CR (some importers strip them): quote it as text. Negative amounts are numbers.
    let formula = s.starts_with(['=', '+', '@', '\t', '\r']) || (s.starts_with('-') && Money::parse(s).is_err());
    if formula || s.contains([',', '"', '\n', '\r']) {
        format!("\"{}{}\"", if formula { "'" } else { "" }, s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// `day` (default), `model` or `api_key`.
    pub group_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    pub key: String,
    /// Net usage: charges minus refunds.
    pub amount: Money,
    /// Number of charges.
    pub count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub data: Vec<UsageRow>,
    pub currency: String,
}

pub async fn usage(pool: &PgPool, tenant_id: Uuid, q: &UsageQuery) -> AppResult<Usage> {
    let group = q.group_by.as_deref().unwrap_or("day");
    if !["day", "model", "api_key"].contains(&group) {
        return Err(AppError::invalid("group_by must be day, model or api_key"));
    }
    let currency = exists(pool, tenant_id).await?;
    // Whole days from the rollups, the partial edge days from the charges and refunds: each
    // edge a LATERAL subquery kept whole (OFFSET 0), so always an index range scan of it.
    let split = days::split(q.from, q.to);
    // A day's usage is the sum of its per-model rows.
    let dim = if group == "api_key" { "api_key" } else { "model" };
    let rows: Vec<(String, Decimal, i64)> = sqlx::query_as(
        "WITH items AS ( \
           SELECT day, key, amount, charges AS n FROM usage_rollups \
           WHERE tenant_id = $1 AND dim = $8 AND $2 AND ($3::date IS NULL OR day >= $3) \
             AND ($4::date IS NULL OR day < $4) \
           UNION ALL \
           SELECT x.* FROM unnest($5::timestamptz[], $6::timestamptz[]) AS w(s, e) CROSS JOIN LATERAL ( \
             SELECT (c.created_at AT TIME ZONE 'UTC')::date, \
                    CASE $8 WHEN 'model' THEN COALESCE(c.model, 'amount') ELSE COALESCE(c.api_key_id::text, 'none') END, \
                    c.amount, 1 \
             FROM charges c WHERE c.tenant_id = $1 AND c.created_at >= w.s AND c.created_at < w.e \
             UNION ALL \
             SELECT (r.created_at AT TIME ZONE 'UTC')::date, \
                    CASE $8 WHEN 'model' THEN COALESCE(c.model, 'amount') ELSE COALESCE(c.api_key_id::text, 'none') END, \
                    -r.amount, 0 \
             FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id \
             WHERE r.tenant_id = $1 AND r.created_at >= w.s AND r.created_at < w.e \
             OFFSET 0) x) \
         SELECT key, sum(amount), sum(n)::int8 FROM ( \
           SELECT CASE $7 WHEN 'day' THEN to_char(day, 'YYYY-MM-DD') ELSE key END AS key, amount, n FROM items) x \
         GROUP BY key ORDER BY key",
    )
    .bind(tenant_id)
    .bind(split.has_days())
    .bind(split.first_day())
    .bind(split.end_day())
    .bind(split.edge_starts())
    .bind(split.edge_ends())
    .bind(group)
    .bind(dim)
    .fetch_all(pool)
    .await?;
    Ok(Usage {
        data: rows.into_iter().map(|(key, a, count)| UsageRow { key, amount: Money::from_db(a), count }).collect(),
        currency,
    })
}

async fn exists(pool: &PgPool, tenant_id: Uuid) -> AppResult<String> {
    sqlx::query_scalar("SELECT currency FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "\"'=SUM(A1)\"");
        assert_eq!(csv_field("-5.00"), "-5.00");
        assert_eq!(csv_field("-1+cmd"), "\"'-1+cmd\"");
        assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_field("\t=1+1"), "\"'\t=1+1\"");
        assert_eq!(csv_field("\r=1+1"), "\"'\r=1+1\"");
        assert_eq!(csv_field("\tplain"), "\"'\tplain\"");
        assert_eq!(csv_field("a\tb"), "a\tb", "only a leading TAB is neutralised");
    }

    #[test]
    fn holds_show_as_movements_out_of_available() {
        let m = |s: &str| s.parse::<Money>().unwrap();
        assert_eq!(amount_direction(m("-2"), Money::ZERO), (m("2"), "debit"));
        assert_eq!(amount_direction(Money::ZERO, m("3")), (m("3"), "debit"));
        assert_eq!(amount_direction(Money::ZERO, m("-3")), (m("3"), "credit"));
    }
}

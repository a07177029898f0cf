//! The ledger invariants, checked over the whole database (`GET /v1/admin/ledger/check`,
//! and by the tests and the benchmark after every scenario).

use serde::Serialize;
use sqlx::PgConnection;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub ok: bool,
    pub transactions_checked: i64,
    pub accounts_checked: i64,
    pub violations: Vec<String>,
}

/// Each query returns one row per violation, described in words.
const CHECKS: &[(&str, &str)] = &[
    (
        "transaction does not sum to zero or has fewer than two entries",
        "SELECT t.tenant_id::text || '/' || t.id::text || ': sum ' || COALESCE(sum(e.amount), 0)::text \
           || ', ' || count(e.line)::text || ' entries' \
         FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.tenant_id = t.tenant_id AND e.transaction_id = t.id \
         GROUP BY t.tenant_id, t.id HAVING COALESCE(sum(e.amount), 0) <> 0 OR count(e.line) < 2",
    ),
    (
        "cached balance differs from the sum of its entries",
        "WITH sums AS ( \
           SELECT tenant_id, \
                  COALESCE(sum(amount) FILTER (WHERE account = 'paid'), 0) AS paid, \
                  COALESCE(sum(amount) FILTER (WHERE account = 'bonus'), 0) AS bonus, \
                  COALESCE(sum(amount) FILTER (WHERE account = 'held'), 0) AS held \
           FROM ledger_entries GROUP BY tenant_id) \
         SELECT b.tenant_id::text || ': cached paid/bonus/held ' || b.paid || '/' || b.bonus || '/' || b.held \
           || ' vs entries ' || COALESCE(s.paid, 0) || '/' || COALESCE(s.bonus, 0) || '/' || COALESCE(s.held, 0) \
         FROM balances b LEFT JOIN sums s ON s.tenant_id = b.tenant_id \
         WHERE (b.paid, b.bonus, b.held) IS DISTINCT FROM (COALESCE(s.paid, 0), COALESCE(s.bonus, 0), COALESCE(s.held, 0))",
    ),
    (
        "tenant balance below zero",
        "SELECT tenant_id::text || ': ' || paid || '/' || bonus || '/' || held FROM balances \
         WHERE paid < 0 OR bonus < 0 OR held < 0",
    ),
    (
        "bonus lots do not add up to the bonus balance",
        "SELECT b.tenant_id::text || ': lots ' || COALESCE(l.s, 0) || ' vs bonus ' || b.bonus \
         FROM balances b LEFT JOIN (SELECT tenant_id, sum(remaining) s FROM bonus_lots GROUP BY tenant_id) l \
           ON l.tenant_id = b.tenant_id WHERE COALESCE(l.s, 0) <> b.bonus",
    ),
    (
        "bonus lot remaining differs from its entries",
        "SELECT l.tenant_id::text || '/' || l.id::text || ': remaining ' || l.remaining || ' vs entries ' \
           || COALESCE(e.s, 0) \
         FROM bonus_lots l LEFT JOIN (SELECT tenant_id, lot_id, sum(amount) s FROM ledger_entries \
           WHERE lot_id IS NOT NULL GROUP BY tenant_id, lot_id) e ON e.tenant_id = l.tenant_id AND e.lot_id = l.id \
         WHERE COALESCE(e.s, 0) <> l.remaining",
    ),
    // The rollups are derived counters: each must equal its recomputation from the ledger
    // rows (migration 0011's *_expected views). A full pass, like the checks above.
    (
        "flow rollup differs from the ledger",
        "SELECT COALESCE(x.tenant_id, r.tenant_id)::text || ' ' || COALESCE(x.day, r.day)::text || ' ' \
           || COALESCE(x.kind, r.kind) || ': rollup ' || COALESCE(r.credited::text, 'none') || '/' \
           || COALESCE(r.debited::text, 'none') || ' vs ledger ' || COALESCE(x.credited::text, 'none') || '/' \
           || COALESCE(x.debited::text, 'none') \
         FROM flow_rollups r FULL JOIN flow_rollups_expected x USING (tenant_id, day, kind) \
         WHERE (r.credited, r.debited) IS DISTINCT FROM (x.credited, x.debited)",
    ),
    (
        "usage rollup differs from the ledger",
        "SELECT COALESCE(x.tenant_id, r.tenant_id)::text || ' ' || COALESCE(x.dim, r.dim) || ' ' \
           || COALESCE(x.day, r.day)::text || ' ' || COALESCE(x.key, r.key) || ': rollup ' \
           || COALESCE(r.amount::text, 'none') || ' x' || COALESCE(r.charges::text, 'none') || ' vs ledger ' \
           || COALESCE(x.amount::text, 'none') || ' x' || COALESCE(x.charges::text, 'none') \
         FROM usage_rollups r FULL JOIN usage_rollups_expected x USING (tenant_id, dim, day, key) \
         WHERE (r.amount, r.charges) IS DISTINCT FROM (x.amount, x.charges)",
    ),
];

/// Runs every check in the caller's transaction, which must have run nothing yet (the
/// HTTP handler runs it through `frame::transaction`).
pub async fn run(tx: &mut PgConnection) -> Result<CheckReport, sqlx::Error> {
    // One snapshot for every query, so concurrent postings cannot show up as violations.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
    let mut violations = Vec::new();
    for (what, sql) in CHECKS {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *tx).await?;
        violations.extend(rows.into_iter().map(|r| format!("{what}: {r}")));
    }
    let transactions_checked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_transactions").fetch_one(&mut *tx).await?;
    let accounts_checked: i64 = sqlx::query_scalar("SELECT count(*) * 3 FROM balances").fetch_one(&mut *tx).await?;
    Ok(CheckReport { ok: violations.is_empty(), transactions_checked, accounts_checked, violations })
}

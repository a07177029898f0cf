//! Spend-limit counters in Postgres: read and written by movements under the tenant's
//! ledger lock (the posting frame holds it whenever these run).
//!
//! - [`Budgets::load`]: for a batch of charges and holds, in ONE statement, the named API
//!   keys (which exist, their allowed models, their limits) and the tenants' limits, each
//!   with its current window's counter; [`Budget::admit`] then decides each item in arrival
//!   order (the pure [`check::admit`]) and [`Budgets::save`] writes what moved, in one
//!   statement, plus the events that became due.
//! - [`give_back`]: captures (the part not captured), releases, expiries and refunds give
//!   back to the windows the spend counted in, if still current: one statement.
//! - [`recount`]: when a limit starts counting, its current window is counted from history
//!   (configuration time, never the hot path).
//!
//! Invariant: for every limit that exists, the counter of its current window equals the net
//! spend that counted in that window (charges and active holds, less what captures,
//! releases, expiries and refunds gave back), so a decision never scans history.
//! When a spend "counted": a charge at its creation, a hold at its placement, a capture at
//! its hold's placement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::check::{self, Admission, Counter, Scope, Signal};
use super::window::{self, Window};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::services::notify::events::{self, EventType};

/// An API key as a charge or hold naming it needs it.
#[derive(Debug, Clone, Default)]
pub struct KeyRule {
    /// `None`: every model.
    pub allowed_models: Option<Vec<String>>,
    /// Its limit's counter (an index into the budget's counters).
    counter: Option<usize>,
}

/// One tenant's limits for a movement: its counters, the keys named, and the events due.
#[derive(Debug, Default)]
pub struct Budget {
    counters: Vec<Counter>,
    /// Whether each counter's row existed when read (then it is updated, else inserted).
    stored: Vec<bool>,
    /// The tenant's own counters (day, then month).
    tenant: Vec<usize>,
    keys: HashMap<Uuid, KeyRule>,
    /// Events that became due, as (type, data), in the order they did.
    due: Vec<(EventType, Value)>,
}

/// The budgets of a batch's tenants (a tenant without limits or named keys has an empty one).
#[derive(Debug, Default)]
pub struct Budgets {
    tenants: HashMap<Uuid, Budget>,
}

type LimitRow = (
    Uuid,
    Uuid,
    bool,
    Option<Window>,
    Option<Decimal>,
    Option<Vec<String>>,
    Option<Decimal>,
    Option<Decimal>,
    Option<Decimal>,
);

/// The limits a spend counts toward, as rows of (tenant, scope id, is a key, window, limit,
/// allowed models): the named keys (each once, limited or not) and the tenants' limits.
const LIMITS: &str = "SELECT k.tenant_id, k.id AS scope, true AS is_key, k.spend_window AS win, k.spend_limit AS lim, \
       k.allowed_models \
     FROM api_keys k JOIN UNNEST($1::uuid[], $2::uuid[]) AS n (tenant_id, id) ON k.tenant_id = n.tenant_id AND k.id = n.id \
     WHERE k.deleted_at IS NULL \
   UNION ALL \
   SELECT l.tenant_id, l.tenant_id, false, w.win, w.lim, NULL \
     FROM tenant_spend_limits l CROSS JOIN LATERAL (VALUES ('day', l.day_limit), ('month', l.month_limit)) AS w (win, lim) \
     WHERE l.tenant_id = ANY($3) AND w.lim IS NOT NULL";

/// `$4..$7`: the current window starts (day, week, month, lifetime) of `window::starts`.
const CURRENT_START: &str =
    "(CASE lims.win WHEN 'day' THEN $4 WHEN 'week' THEN $5 WHEN 'month' THEN $6 ELSE $7 END)::timestamptz";

impl Budgets {
    /// Reads the limits of `tenants` (those with limits of their own: the ledger lock's row
    /// says which) and the `(tenant, key)` pairs the items name, each limit with its
    /// counter for the window current at `now`: one statement.
    pub async fn load(
        conn: &mut PgConnection,
        tenants: &[Uuid],
        keys: &[(Uuid, Uuid)],
        now: DateTime<Utc>,
    ) -> AppResult<Budgets> {
        let [day, week, month, life] = window::starts(now);
        let rows: Vec<LimitRow> = sqlx::query_as(&format!(
            "WITH lims AS ({LIMITS}) \
             SELECT lims.tenant_id, lims.scope, lims.is_key, lims.win, lims.lim, lims.allowed_models, \
                    c.spent, c.warned_limit, c.reached_limit \
             FROM lims LEFT JOIN spend_counters c ON c.tenant_id = lims.tenant_id AND c.scope = lims.scope \
               AND c.window_kind = lims.win AND c.window_start = {CURRENT_START}"
        ))
        .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
        .bind(tenants)
        .bind(day)
        .bind(week)
        .bind(month)
        .bind(life)
        .fetch_all(conn)
        .await?;
        let mut budgets = Budgets::default();
        for (tenant, scope, is_key, win, lim, allowed, spent, warned, reached) in rows {
            let b = budgets.tenants.entry(tenant).or_default();
            let counter = match (win, lim) {
                (Some(w), Some(l)) => {
                    let s = if is_key { Scope::ApiKey(scope) } else { Scope::Tenant };
                    let mut c = Counter::new(s, w, Money::from_db(l), now);
                    c.spent = spent.map(Money::from_db).unwrap_or(Money::ZERO);
                    (c.warned, c.reached) = (warned.map(Money::from_db), reached.map(Money::from_db));
                    b.counters.push(c);
                    b.stored.push(spent.is_some());
                    Some(b.counters.len() - 1)
                }
                _ => None,
            };
            if is_key {
                b.keys.insert(scope, KeyRule { allowed_models: allowed, counter });
            } else if let Some(i) = counter {
                b.tenant.push(i);
            }
        }
        for b in budgets.tenants.values_mut() {
            // Day before month, whatever order the rows came in: a refusal names the first.
            b.tenant.sort_by_key(|i| Window::ALL.iter().position(|w| *w == b.counters[*i].window));
        }
        Ok(budgets)
    }

    /// The tenant's budget (empty when it has no limits and names no keys).
    pub fn tenant(&mut self, tenant: Uuid) -> &mut Budget {
        self.tenants.entry(tenant).or_default()
    }

    /// Writes every counter that moved and the events that became due, in the movement's
    /// transaction: one statement for the rows that exist (the steady state), one more
    /// only when a window's first spend creates its row.
    pub async fn save(&mut self, conn: &mut PgConnection, now: DateTime<Utc>) -> AppResult<()> {
        let (mut update, mut insert) = (Columns::default(), Columns::default());
        for (tenant, b) in &self.tenants {
            for (c, stored) in b.counters.iter().zip(&b.stored).filter(|(c, _)| c.dirty) {
                if *stored { &mut update } else { &mut insert }.push(*tenant, c);
            }
        }
        update.write(conn, now, UPDATE_COUNTERS).await?;
        insert.write(conn, now, INSERT_COUNTERS).await?;
        for (tenant, b) in &mut self.tenants {
            for (kind, data) in std::mem::take(&mut b.due) {
                events::emit(conn, *tenant, kind, data).await?;
            }
        }
        Ok(())
    }
}

impl Budget {
    /// The named key, if it is one of this tenant's (and not deleted).
    pub fn key(&self, key: Uuid) -> Option<&KeyRule> {
        self.keys.get(&key)
    }

    /// Whether the spend may use `model` through `key` (a key without `allowed_models`
    /// allows every model; an explicit amount names no model and is not limited).
    pub fn model_allowed(&self, key: Option<Uuid>, model: Option<&str>) -> bool {
        let rule = key.and_then(|k| self.keys.get(&k));
        match (rule.and_then(|r| r.allowed_models.as_ref()), model) {
            (Some(allowed), Some(m)) => allowed.iter().any(|a| a == m),
            _ => true,
        }
    }

    /// Decides `amount` for a spend naming `key` against the key's limit, then the
    /// tenant's day and month limits; counts it on all of them when it fits every one.
    pub fn admit(&mut self, key: Option<Uuid>, amount: Money, currency: &str) -> Result<(), AppError> {
        let mut which: Vec<usize> = key.and_then(|k| self.keys.get(&k)).and_then(|r| r.counter).into_iter().collect();
        which.extend(&self.tenant);
        if which.is_empty() {
            return Ok(());
        }
        let (due, refused) = match check::admit(&mut self.counters, &which, amount) {
            Admission::Counted(due) => (due, None),
            Admission::Refused { by, due } => (due, Some(by)),
        };
        for (i, signal) in due {
            let kind = match signal {
                Signal::Warning => EventType::SpendLimitWarning,
                Signal::Reached => EventType::SpendLimitReached,
            };
            self.due.push((kind, event_data(&self.counters[i], currency)));
        }
        match refused {
            None => Ok(()),
            Some(by) => Err(AppError::SpendLimitExceeded(Box::new(self.counters[by].exceeded(amount, currency)))),
        }
    }
}

/// An event's `data`: which limit, and where its window stands.
fn event_data(c: &Counter, currency: &str) -> Value {
    let mut data = json!({
        "scope": c.scope.name(),
        "window": c.window,
        "limit": c.limit,
        "spent": c.spent,
        "resets_at": c.resets_at,
        "currency": currency,
    });
    if let Some(k) = c.scope.api_key_id() {
        data["api_key_id"] = json!(k);
    }
    data
}

/// Adds each counter's amount to its row and sets its event marks. Under the tenant's lock
/// no other writer moves these rows meanwhile.
const UPDATE_COUNTERS: &str = "UPDATE spend_counters c SET spent = c.spent + u.a, warned_limit = u.wa, \
       reached_limit = u.re, updated_at = $8 \
     FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::numeric[], $6::numeric[], \
       $7::numeric[]) AS u (t, s, w, st, a, wa, re) \
     WHERE c.tenant_id = u.t AND c.scope = u.s AND c.window_kind = u.w AND c.window_start = u.st";

/// A window's first counter row starts from its amount (an upsert all the same).
const INSERT_COUNTERS: &str = "INSERT INTO spend_counters (tenant_id, scope, window_kind, window_start, spent, \
       warned_limit, reached_limit, updated_at) \
     SELECT t, s, w, st, a, wa, re, $8 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], \
       $5::numeric[], $6::numeric[], $7::numeric[]) AS u (t, s, w, st, a, wa, re) \
     ON CONFLICT (tenant_id, scope, window_kind, window_start) DO UPDATE SET \
       spent = spend_counters.spent + EXCLUDED.spent, warned_limit = EXCLUDED.warned_limit, \
       reached_limit = EXCLUDED.reached_limit, updated_at = EXCLUDED.updated_at";

/// Counter writes as columns, for one `UNNEST` statement.
#[derive(Default)]
struct Columns {
    tenant: Vec<Uuid>,
    scope: Vec<Uuid>,
    window: Vec<Window>,
    start: Vec<DateTime<Utc>>,
    added: Vec<Decimal>,
    warned: Vec<Option<Decimal>>,
    reached: Vec<Option<Decimal>>,
}

impl Columns {
    fn push(&mut self, tenant: Uuid, c: &Counter) {
        self.tenant.push(tenant);
        self.scope.push(c.scope.api_key_id().unwrap_or(tenant));
        self.window.push(c.window);
        self.start.push(c.start);
        self.added.push(c.added.as_decimal());
        self.warned.push(c.warned.map(Money::as_decimal));
        self.reached.push(c.reached.map(Money::as_decimal));
    }

    async fn write(self, conn: &mut PgConnection, now: DateTime<Utc>, sql: &'static str) -> AppResult<()> {
        if self.tenant.is_empty() {
            return Ok(());
        }
        sqlx::query(sql)
            .bind(&self.tenant)
            .bind(&self.scope)
            .bind(&self.window)
            .bind(&self.start)
            .bind(&self.added)
            .bind(&self.warned)
            .bind(&self.reached)
            .bind(now)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Gives `amount` back to the limits a spend naming `key` counted toward at `counted_at`,
/// in each window that is still current at `now` (a window that has reset keeps what was
/// spent in it). One statement; nothing when the tenant and key have no limits.
pub async fn give_back(
    conn: &mut PgConnection,
    tenant: Uuid,
    key: Option<Uuid>,
    counted_at: DateTime<Utc>,
    amount: Money,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let current: Vec<Window> = Window::ALL.iter().copied().filter(|w| w.current(counted_at, now)).collect();
    if !amount.is_positive() || current.is_empty() {
        return Ok(());
    }
    let starts: Vec<DateTime<Utc>> = current.iter().map(|w| w.start(now)).collect();
    let keys: Vec<Uuid> = key.into_iter().collect();
    sqlx::query(&format!(
        "WITH lims AS ({LIMITS}), cur AS (SELECT * FROM UNNEST($4::text[], $5::timestamptz[]) AS c (win, start)) \
         UPDATE spend_counters c SET spent = c.spent - $6, updated_at = $7 \
         FROM lims JOIN cur ON cur.win = lims.win \
         WHERE c.tenant_id = lims.tenant_id AND c.scope = lims.scope AND c.window_kind = lims.win \
           AND c.window_start = cur.start"
    ))
    .bind(keys.iter().map(|_| tenant).collect::<Vec<_>>())
    .bind(&keys)
    .bind(vec![tenant])
    .bind(&current)
    .bind(&starts)
    .bind(amount.as_decimal())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts, from history, what the window of `window` current at `now` has spent for
/// `scope`, and writes it to the counter (keeping its event marks): for a limit that
/// starts counting now, or whose counter stopped while it had none. Run under the
/// tenant's lock, so no spend moves the counter meanwhile.
pub async fn recount(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: Scope,
    window: Window,
    now: DateTime<Utc>,
) -> AppResult<Money> {
    let key = scope.api_key_id();
    // A charge counted when it was made, or, for a capture, when its hold was placed.
    let spent: Decimal = sqlx::query_scalar(
        "WITH counted AS ( \
           SELECT c.id, c.amount FROM charges c \
           LEFT JOIN holds h ON h.tenant_id = c.tenant_id AND h.id = c.hold_id \
           WHERE c.tenant_id = $1 AND ($2::uuid IS NULL OR c.api_key_id = $2) AND c.created_at >= $3 \
             AND COALESCE(h.created_at, c.created_at) >= $3) \
         SELECT COALESCE((SELECT sum(amount) FROM counted), 0) \
              - COALESCE((SELECT sum(r.amount) FROM refunds r JOIN counted ON r.charge_id = counted.id \
                          WHERE r.tenant_id = $1), 0) \
              + COALESCE((SELECT sum(h.amount) FROM holds h WHERE h.tenant_id = $1 AND h.status = 'active' \
                          AND ($2::uuid IS NULL OR h.api_key_id = $2) AND h.created_at >= $3), 0)",
    )
    .bind(tenant)
    .bind(key)
    .bind(window.start(now))
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO spend_counters (tenant_id, scope, window_kind, window_start, spent, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, scope, window_kind, window_start) DO UPDATE SET spent = EXCLUDED.spent, \
           updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant)
    .bind(key.unwrap_or(tenant))
    .bind(window)
    .bind(window.start(now))
    .bind(spent)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(Money::from_db(spent))
}

/// When a charge counted, and the key it named: for its refunds.
pub async fn charge_counted(
    conn: &mut PgConnection,
    tenant: Uuid,
    charge: Uuid,
) -> AppResult<(Option<Uuid>, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT c.api_key_id, COALESCE(h.created_at, c.created_at) FROM charges c \
         LEFT JOIN holds h ON h.tenant_id = c.tenant_id AND h.id = c.hold_id \
         WHERE c.tenant_id = $1 AND c.id = $2",
    )
    .bind(tenant)
    .bind(charge)
    .fetch_optional(conn)
    .await?
    .ok_or(AppError::NotFound)
}

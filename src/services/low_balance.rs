//! `balance.low` and `balance.depleted`, written inside the hot path's charge transaction.
//!
//! Cost on the hot path: at most one statement per batch, and none in the common case.
//! Whether a batch crosses a tenant's threshold is decided in Rust from a per-process
//! cache of the tenant's auto top-up setting; only a crossing (or an unknown setting)
//! runs the statement, which checks the crossing again against the database's threshold
//! and writes the events with their webhook deliveries.
//!
//! Coherence across replicas: every change of a setting sends a Postgres notification on
//! [`CHANNEL`] when it commits, and [`listen`] (run by each replica's auto top-up worker)
//! drops that tenant's entry; the whole cache is dropped whenever the listening connection
//! is (re)established, since notifications may have been missed. [`TTL`] bounds staleness
//! should the listener not run. The auto top-up worker never relies on the cache: its
//! decisions read the database.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::Decimal;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use super::events::QUEUE_DELIVERIES;
use crate::error::AppResult;
use crate::ids::new_id;
use crate::money::Money;

pub const TTL: Duration = Duration::from_secs(60);
/// The notification channel of setting changes (payload: the tenant id).
pub const CHANNEL: &str = "tally_auto_top_up";

/// A tenant's auto top-up setting as the hot path needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub threshold: Money,
    pub enabled: bool,
}

/// Tenant → (setting, if any; when it was read).
static CACHE: LazyLock<Mutex<HashMap<Uuid, (Option<Setting>, Instant)>>> = LazyLock::new(Default::default);

fn cache() -> std::sync::MutexGuard<'static, HashMap<Uuid, (Option<Setting>, Instant)>> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cached setting: `None` when unknown or stale, `Some(None)` when the tenant has none.
pub fn cached(tenant: Uuid) -> Option<Option<Setting>> {
    cache().get(&tenant).filter(|(_, at)| at.elapsed() < TTL).map(|(s, _)| *s)
}

pub fn remember(tenant: Uuid, setting: Option<Setting>) {
    let mut c = cache();
    if c.len() > 200_000 {
        c.retain(|_, (_, at)| at.elapsed() < TTL);
    }
    c.insert(tenant, (setting, Instant::now()));
}

/// The next batch reads the setting from the database.
pub fn forget(tenant: Uuid) {
    cache().remove(&tenant);
}

fn clear() {
    cache().clear();
}

/// Tells every replica, when the caller's transaction commits, that the tenant's setting changed.
pub async fn announce(conn: &mut PgConnection, tenant: Uuid) -> AppResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(tenant.to_string()).execute(conn).await?;
    Ok(())
}

/// Keeps this process's cache coherent with changes made anywhere, until `stop`. Uses its
/// own connection, not one of the pool's.
pub async fn listen(pool: PgPool, mut stop: watch::Receiver<bool>) {
    let own = PgPoolOptions::new().max_connections(1).connect_lazy_with((*pool.connect_options()).clone());
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&own).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match connected.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for auto top-up changes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        clear();
        loop {
            tokio::select! {
                got = listener.try_recv() => match got {
                    Ok(Some(n)) => match n.payload().parse() {
                        Ok(tenant) => forget(tenant),
                        Err(_) => clear(),
                    },
                    // Reconnected: what was sent meanwhile is lost.
                    Ok(None) => clear(),
                    Err(e) => {
                        tracing::warn!(error = %e, "auto top-up change listener failed; reconnecting");
                        clear();
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}

/// True when a spend from `before` to `after` needs the statement: it may cross the
/// threshold, reaches zero, or the setting is not known.
fn needs_statement(known: Option<Option<Setting>>, before: Money, after: Money) -> bool {
    let depleted = after.is_zero() && before.is_positive();
    match known {
        None => true,
        Some(setting) => depleted || setting.is_some_and(|s| before >= s.threshold && after < s.threshold),
    }
}

/// Writes the events of a spend that took `available` from `before` to `after`, in the
/// spend's transaction. `balance.low`: `before` was at or above the threshold and `after`
/// is below it (once per crossing). `balance.depleted`: `after` is zero.
pub async fn within_spend(conn: &mut PgConnection, tenant: Uuid, before: Money, after: Money) -> AppResult<()> {
    if after >= before || !needs_statement(cached(tenant), before, after) {
        return Ok(());
    }
    let row: Option<(Decimal, bool)> = sqlx::query_as(&format!(
        "WITH cfg AS (SELECT threshold, enabled FROM auto_top_up WHERE tenant_id = $1), \
         cur AS (SELECT currency FROM balances WHERE tenant_id = $1), \
         new_events (id, type, data) AS ( \
           SELECT $2::uuid, 'balance.low', jsonb_build_object('available', $5::text, \
             'threshold', tally_money_text(cfg.threshold), 'auto_top_up_enabled', cfg.enabled, 'currency', cur.currency) \
           FROM cfg, cur WHERE cfg.threshold <= $3 AND cfg.threshold > $4 \
           UNION ALL \
           SELECT $6::uuid, 'balance.depleted', jsonb_build_object('available', $5::text, 'currency', cur.currency) \
           FROM cur WHERE $7), \
         ev AS (INSERT INTO events (tenant_id, id, type, data, created_at) \
           SELECT $1, id, type, data, $8 FROM new_events RETURNING tenant_id, id, type, created_at), \
         deliveries AS ({QUEUE_DELIVERIES}) \
         SELECT threshold, enabled FROM cfg"
    ))
    .bind(tenant)
    .bind(new_id())
    .bind(before.as_decimal())
    .bind(after.as_decimal())
    .bind(after.to_string())
    .bind(new_id())
    .bind(after.is_zero())
    .bind(Utc::now())
    .fetch_optional(conn)
    .await?;
    remember(tenant, row.map(|(t, enabled)| Setting { threshold: Money::from_db(t), enabled }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn only_crossings_and_unknown_settings_cost_a_statement() {
        let s = Some(Some(Setting { threshold: m("10"), enabled: true }));
        assert!(needs_statement(s, m("10"), m("9.99")), "crosses");
        assert!(needs_statement(s, m("12"), m("3")), "crosses");
        assert!(!needs_statement(s, m("9"), m("5")), "already below: no new crossing");
        assert!(!needs_statement(s, m("20"), m("10")), "not below");
        assert!(needs_statement(s, m("5"), m("0")), "depleted");
        assert!(!needs_statement(Some(None), m("20"), m("1")), "no setting");
        assert!(needs_statement(Some(None), m("1"), m("0")), "depleted without a setting");
        assert!(needs_statement(None, m("20"), m("19")), "unknown");
    }

    #[test]
    fn the_cache_remembers_and_forgets() {
        let t = new_id();
        assert_eq!(cached(t), None);
        remember(t, None);
        assert_eq!(cached(t), Some(None));
        forget(t);
        assert_eq!(cached(t), None);
    }
}

//! `balance.low` and `balance.depleted`, and the auto top-up wake-up, for every movement
//! that lowers a tenant's `available` (the posting frame calls [`LowBalance::within`] before
//! its commit, and [`LowBalance::after_commit`] after it).
//!
//! Cost on the hot path: at most one statement per batch, and none in the common case.
//! Whether a movement crosses a tenant's threshold is decided in Rust from a per-process
//! cache of the tenant's auto top-up setting (held in the application state); only a
//! crossing (or an unknown setting) runs the statement, which checks the crossing again
//! against the database's threshold and writes the events with their webhook deliveries.
//!
//! Coherence across replicas: every change of a setting sends a Postgres notification on
//! [`CHANNEL`] when it commits, and [`LowBalance::listen`] (run by each replica's auto
//! top-up worker) drops that tenant's entry; the whole cache is dropped whenever the
//! listening connection is (re)established, since notifications may have been missed.
//! [`TTL`] bounds staleness should the listener not run. The auto top-up worker never
//! relies on the cache: its decisions read the database.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::Decimal;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, watch};
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

/// Wakes this replica's auto top-up worker for a tenant (see `workers::auto_top_up`).
pub struct Signal {
    tx: mpsc::Sender<Uuid>,
    rx: Mutex<Option<mpsc::Receiver<Uuid>>>,
}

impl Default for Signal {
    fn default() -> Signal {
        let (tx, rx) = mpsc::channel(4096);
        Signal { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Signal {
    /// Never waits: when the worker is behind, the periodic sweep catches the tenant.
    pub fn nudge(&self, tenant: Uuid) {
        let _ = self.tx.try_send(tenant);
    }
    /// The worker's end of the channel (once).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Uuid>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Tenant → (setting, if any; when it was read).
type Cache = HashMap<Uuid, (Option<Setting>, Instant)>;

/// The low-balance watch of one process: its settings cache and the worker's wake-up.
#[derive(Default)]
pub struct LowBalance {
    cache: Mutex<Cache>,
    pub signal: Signal,
}

impl LowBalance {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic elsewhere while holding the lock leaves a usable map: keep serving.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached setting: `None` when unknown or stale, `Some(None)` when the tenant has none.
    pub fn cached(&self, tenant: Uuid) -> Option<Option<Setting>> {
        self.cache().get(&tenant).filter(|(_, at)| at.elapsed() < TTL).map(|(s, _)| *s)
    }

    pub fn remember(&self, tenant: Uuid, setting: Option<Setting>) {
        let mut c = self.cache();
        if c.len() > 200_000 {
            c.retain(|_, (_, at)| at.elapsed() < TTL);
        }
        c.insert(tenant, (setting, Instant::now()));
    }

    /// The next movement reads the setting from the database.
    pub fn forget(&self, tenant: Uuid) {
        self.cache().remove(&tenant);
    }

    fn clear(&self) {
        self.cache().clear();
    }

    /// Keeps this process's cache coherent with changes made anywhere, until `stop`. Uses
    /// its own connection, not one of the pool's.
    pub async fn listen(&self, pool: PgPool, mut stop: watch::Receiver<bool>) {
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
            self.clear();
            loop {
                tokio::select! {
                    got = listener.try_recv() => match got {
                        Ok(Some(n)) => match n.payload().parse() {
                            Ok(tenant) => self.forget(tenant),
                            Err(_) => self.clear(),
                        },
                        // Reconnected: what was sent meanwhile is lost.
                        Ok(None) => self.clear(),
                        Err(e) => {
                            tracing::warn!(error = %e, "auto top-up change listener failed; reconnecting");
                            self.clear();
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Writes the events of a movement that took each tenant's `available` from `before` to
    /// `after` (tenant, before, after), in the movement's transaction, in one statement for
    /// all the tenants that need one. `balance.low`: `before` was at or above the threshold
    /// and `after` is below it (once per crossing). `balance.depleted`: `after` is zero.
    pub async fn within(&self, conn: &mut PgConnection, moved: &[(Uuid, Money, Money)]) -> AppResult<()> {
        let due: Vec<&(Uuid, Money, Money)> = moved
            .iter()
            .filter(|(t, before, after)| after < before && needs_statement(self.cached(*t), *before, *after))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let tenants: Vec<Uuid> = due.iter().map(|m| m.0).collect();
        let before: Vec<Decimal> = due.iter().map(|m| m.1.as_decimal()).collect();
        let after: Vec<Decimal> = due.iter().map(|m| m.2.as_decimal()).collect();
        let shown: Vec<String> = due.iter().map(|m| m.2.to_string()).collect();
        let depleted: Vec<bool> = due.iter().map(|m| m.2.is_zero()).collect();
        let low_ids: Vec<Uuid> = due.iter().map(|_| new_id()).collect();
        let depleted_ids: Vec<Uuid> = due.iter().map(|_| new_id()).collect();
        let rows: Vec<(Uuid, Option<Decimal>, Option<bool>)> = sqlx::query_as(&format!(
            "WITH m AS (SELECT * FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::text[], $5::bool[], \
                          $6::uuid[], $7::uuid[]) AS m(tenant_id, before, after, shown, depleted, low_id, depleted_id)), \
             new_events (tenant_id, id, type, data) AS ( \
               SELECT m.tenant_id, m.low_id, 'balance.low', jsonb_build_object('available', m.shown, \
                 'threshold', tally_money_text(cfg.threshold), 'auto_top_up_enabled', cfg.enabled, 'currency', b.currency) \
               FROM m JOIN auto_top_up cfg ON cfg.tenant_id = m.tenant_id JOIN balances b ON b.tenant_id = m.tenant_id \
               WHERE cfg.threshold <= m.before AND cfg.threshold > m.after \
               UNION ALL \
               SELECT m.tenant_id, m.depleted_id, 'balance.depleted', \
                 jsonb_build_object('available', m.shown, 'currency', b.currency) \
               FROM m JOIN balances b ON b.tenant_id = m.tenant_id WHERE m.depleted), \
             ev AS (INSERT INTO events (tenant_id, id, type, data, created_at) \
               SELECT tenant_id, id, type, data, $8 FROM new_events RETURNING tenant_id, id, type, created_at), \
             deliveries AS ({QUEUE_DELIVERIES}) \
             SELECT m.tenant_id, cfg.threshold, cfg.enabled FROM m LEFT JOIN auto_top_up cfg ON cfg.tenant_id = m.tenant_id"
        ))
        .bind(&tenants)
        .bind(&before)
        .bind(&after)
        .bind(&shown)
        .bind(&depleted)
        .bind(&low_ids)
        .bind(&depleted_ids)
        .bind(Utc::now())
        .fetch_all(conn)
        .await?;
        for (tenant, threshold, enabled) in rows {
            let setting =
                threshold.map(|t| Setting { threshold: Money::from_db(t), enabled: enabled.unwrap_or(false) });
            self.remember(tenant, setting);
        }
        Ok(())
    }

    /// After the movement's commit: wakes the worker when the tenant is now below an
    /// enabled threshold. In memory only.
    pub fn after_commit(&self, tenant: Uuid, available: Money) {
        if let Some(Some(s)) = self.cached(tenant) {
            if s.enabled && available < s.threshold {
                self.signal.nudge(tenant);
            }
        }
    }
}

/// Tells every replica, when the caller's transaction commits, that the tenant's setting changed.
pub async fn announce(conn: &mut PgConnection, tenant: Uuid) -> AppResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(tenant.to_string()).execute(conn).await?;
    Ok(())
}

/// True when a movement from `before` to `after` needs the statement: it may cross the
/// threshold, reaches zero, or the setting is not known.
fn needs_statement(known: Option<Option<Setting>>, before: Money, after: Money) -> bool {
    let depleted = after.is_zero() && before.is_positive();
    match known {
        None => true,
        Some(setting) => depleted || setting.is_some_and(|s| before >= s.threshold && after < s.threshold),
    }
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
        let (low, t) = (LowBalance::default(), new_id());
        assert_eq!(low.cached(t), None);
        low.remember(t, None);
        assert_eq!(low.cached(t), Some(None));
        low.forget(t);
        assert_eq!(low.cached(t), None);
    }
}

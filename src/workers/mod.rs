//! Background workers, run in every replica. They coordinate only through Postgres
//! (ledger locks, `SKIP LOCKED`, unique indexes), so any number of replicas is safe.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::services::accounts::expiry;
use crate::services::notify::expiry_notices;
use crate::services::spend::holds;
use crate::state::AppState;

pub mod auto_top_up;
pub mod webhooks;

/// Runs the periodic work, the auto top-up worker and webhook delivery until `stop` turns
/// true; each finishes its pass (and its provider calls) before the returned task ends.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let money_in = [auto_top_up::spawn(state.clone(), stop.clone()), webhooks::spawn(state.clone(), stop.clone())];
    let periodic = tokio::spawn(async move {
        let every = state.config.worker_interval;
        let mut last_purge = Instant::now() - Duration::from_secs(3600);
        loop {
            tick(&state, &mut last_purge).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let _ = periodic.await;
        for worker in money_in {
            let _ = worker.await;
        }
    })
}

async fn tick(state: &AppState, last_purge: &mut Instant) {
    let pool = &state.pool;
    if let Err(e) = holds::expire_overdue(&state.frame, 200).await {
        tracing::error!(error = %e, "hold expiry failed");
    }
    if let Err(e) = expiry::expire_lots(&state.frame, 200).await {
        tracing::error!(error = %e, "credit expiry failed");
    }
    if let Err(e) = expiry_notices::notify_expiring(pool, state.config.credits_expiring_notice, 200).await {
        tracing::error!(error = %e, "credits.expiring notices failed");
    }
    if let Err(e) = state.prices.reload(pool).await {
        tracing::error!(error = %e, "price book reload failed");
    }
    if last_purge.elapsed() > Duration::from_secs(600) {
        *last_purge = Instant::now();
        // Keys are kept 7 days: well past the 24 hours the contract promises.
        let r = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys \
             WHERE created_at < now() - interval '7 days' LIMIT 10000))",
        )
        .execute(pool)
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "idempotency key purge failed");
        }
    }
}

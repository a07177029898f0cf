//! The auto top-up worker, one per replica.
//!
//! It reacts to this replica's movements at once (a [`Signal`](crate::services::notify::low_balance::Signal)
//! from the posting frame, for every movement that lowers `available`, coalesced for a few
//! milliseconds), and sweeps the database every
//! `TALLY_WORKER_INTERVAL_MS` for what any replica missed: tenants below an enabled
//! threshold with no attempt in flight, and pending attempts whose re-drive is due
//! (a crash, a timeout or an unavailable provider left them pending; one whose outcome is
//! unknown is re-driven until the provider answers), and manual attempts whose client has
//! not come back, which it takes over and re-drives with their provider key until the
//! provider gives a final answer (none is ever closed without one).
//! A successful automatic attempt wakes the worker again for its tenant, since one attempt
//! may not close the whole gap to the threshold. The same sweep re-drives top-up refunds the
//! provider has not answered yet, with their own provider keys.
//!
//! It also runs the listener that keeps the hot path's cache of settings coherent across
//! replicas (`services::notify::low_balance`).
//!
//! Replicas coordinate only through Postgres (see `services::money_in::auto_top_up` and
//! `services::money_in::attempts`); provider calls run on their own tasks, so a slow provider
//! never delays the next decision, and shutdown waits for the calls in progress.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use crate::services::money_in::attempts::{self, Settled};
use crate::services::money_in::auto_top_up;
use crate::services::money_in::records::TopUpRow;
use crate::services::money_in::refunds;
use crate::state::AppState;
use crate::vocab::TopUpSource;

/// How long a wake-up waits for more tenants before it decides.
const COALESCE: Duration = Duration::from_millis(10);
/// Provider calls in progress per replica; beyond that, the sweep picks the rest up later.
const MAX_RUNNING: usize = 32;
/// Rows and tenants looked at per sweep.
const SWEEP_BATCH: i64 = 100;

pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let (low, pool, listen_stop) = (state.low_balance.clone(), state.pool.clone(), stop.clone());
    let listener = tokio::spawn(async move { low.listen(pool, listen_stop).await });
    tokio::spawn(async move {
        let mut wakeups = state.low_balance.signal.take_receiver();
        let mut running = JoinSet::new();
        let mut sweep = tokio::time::interval(state.config.worker_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(first) = next_wakeup(&mut wakeups) => {
                    let tenants = coalesce(first, wakeups.as_mut()).await;
                    for tenant in tenants {
                        start(&state, tenant, &mut running).await;
                    }
                }
                _ = sweep.tick() => run_sweep(&state, &mut running).await,
                _ = stop.changed() => break,
            }
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
        let _ = listener.await;
    })
}

async fn next_wakeup(rx: &mut Option<mpsc::Receiver<Uuid>>) -> Option<Uuid> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn coalesce(first: Uuid, rx: Option<&mut mpsc::Receiver<Uuid>>) -> HashSet<Uuid> {
    let mut tenants = HashSet::from([first]);
    if let Some(rx) = rx {
        let deadline = tokio::time::sleep(COALESCE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                Some(t) = rx.recv() => { tenants.insert(t); }
                _ = &mut deadline => break,
            }
        }
    }
    tenants
}

/// Decides for one tenant and, when an attempt is due, runs it on its own task.
async fn start(state: &AppState, tenant: Uuid, running: &mut JoinSet<()>) {
    if running.len() >= MAX_RUNNING {
        return;
    }
    match auto_top_up::begin_attempt(&state.money_in, tenant).await {
        Ok(Some(row)) => {
            running.spawn(run(state.clone(), row));
        }
        Ok(None) => {}
        Err(e) => tracing::error!(%tenant, error = %e, "auto top-up decision failed"),
    }
}

async fn run(state: AppState, row: TopUpRow) {
    let (tenant, id) = (row.tenant_id, row.id);
    match attempts::run(&state.money_in, row).await {
        Ok(Settled::Succeeded { view, .. }) => {
            tracing::info!(%tenant, top_up = %id, amount = %view.amount, "top-up succeeded");
            // One attempt is capped (top-up maximum, monthly limit): if the tenant is still
            // below its threshold, the next attempt follows now rather than at the next sweep.
            if view.source == TopUpSource::Auto {
                state.low_balance.signal.nudge(tenant);
            }
        }
        Ok(Settled::Declined { reason, .. }) => tracing::warn!(%tenant, top_up = %id, reason, "top-up declined"),
        Ok(Settled::NoAnswer | Settled::AlreadySettled) => {}
        Err(e) => tracing::error!(%tenant, top_up = %id, error = %e, "top-up attempt failed"),
    }
}

async fn run_sweep(state: &AppState, running: &mut JoinSet<()>) {
    if let Err(e) = redrive_due(state, running).await {
        tracing::error!(error = %e, "re-driving pending top-ups failed");
    }
    if let Err(e) = redrive_refunds(state, running).await {
        tracing::error!(error = %e, "re-driving pending top-up refunds failed");
    }
    if let Err(e) = attempts::hand_over_stale(&state.pool, attempts::HAND_OVER_AFTER, SWEEP_BATCH).await {
        tracing::error!(error = %e, "handing stale top-ups over to the sweep failed");
    }
    match below_threshold(state).await {
        Ok(tenants) => {
            for tenant in tenants {
                start(state, tenant, running).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "auto top-up sweep failed"),
    }
}

/// Pending attempts whose lease ended without an outcome: same row, same provider key.
async fn redrive_due(state: &AppState, running: &mut JoinSet<()>) -> crate::error::AppResult<()> {
    for (tenant, id) in attempts::due(&state.pool, SWEEP_BATCH).await? {
        if running.len() >= MAX_RUNNING {
            break;
        }
        let mut conn = state.pool.acquire().await?;
        if let Some(row) = attempts::claim(&mut conn, tenant, id, attempts::lease(&state.config)).await? {
            tracing::info!(%tenant, top_up = %id, attempts = row.attempts, "re-driving a pending top-up with its provider key");
            running.spawn(run(state.clone(), row));
        }
    }
    Ok(())
}

/// Pending top-up refunds whose provider call is due again: same row, same provider key.
async fn redrive_refunds(state: &AppState, running: &mut JoinSet<()>) -> crate::error::AppResult<()> {
    for (tenant, id) in refunds::due(&state.pool, SWEEP_BATCH).await? {
        if running.len() >= MAX_RUNNING {
            break;
        }
        let mi = state.money_in.clone();
        running.spawn(async move {
            match refunds::redrive(&mi, tenant, id).await {
                Ok(Some(settled)) => {
                    tracing::info!(%tenant, refund = %id, ?settled, "re-drove a pending top-up refund")
                }
                Ok(None) => {}
                Err(e) => tracing::error!(%tenant, refund = %id, error = %e, "a top-up refund re-drive failed"),
            }
        });
    }
    Ok(())
}

/// Tenants below an enabled threshold, out of back-off, with no attempt in flight.
async fn below_threshold(state: &AppState) -> crate::error::AppResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT a.tenant_id FROM auto_top_up a JOIN balances b ON b.tenant_id = a.tenant_id \
         WHERE a.enabled AND (a.next_attempt_at IS NULL OR a.next_attempt_at <= now()) \
           AND b.paid + b.bonus < a.threshold \
           AND NOT EXISTS (SELECT 1 FROM top_ups p WHERE p.tenant_id = a.tenant_id AND p.source = 'auto' AND p.status = 'pending') \
         LIMIT $1",
    )
    .bind(SWEEP_BATCH)
    .fetch_all(&state.pool)
    .await?)
}

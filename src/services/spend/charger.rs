//! Group commit for one tenant's charges and holds.
//!
//! While a batch for a tenant is being committed, new charges for that tenant queue up;
//! when the commit ends, everything queued (up to `TALLY_CHARGE_BATCH_MAX`) goes into the
//! next database transaction. Nobody waits on a timer: a lone charge runs at once, and a
//! charge waits at most for the commit in progress. Every charge still gets its own
//! decision, idempotency key and response, sent only after its batch is durable.
//!
//! With batching off (`TALLY_CHARGE_BATCHING=off`) every charge is its own transaction:
//! the lock-per-charge design, kept to measure against.
//!
//! Invariant: a tenant's turn runs on a spawned task, and each batch runs through the
//! posting frame (its own task too); a client that disconnects drops only its reply, never
//! a transaction.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use rust_decimal::Decimal;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::batch::{self, Item, Spend};
use crate::clock::Clock;
use crate::error::{AppError, AppResult};
use crate::frame::Frame;
use crate::idempotency::{Claim, Stored};

pub struct Charger {
    frame: Frame,
    credits_per_usd: Decimal,
    batching: bool,
    max: usize,
    /// Tenants with a batch in progress, and what queued behind it.
    queues: Mutex<HashMap<Uuid, Vec<Item>>>,
}

impl Charger {
    pub fn new(frame: Frame, credits_per_usd: Decimal, batching: bool, max: usize) -> Charger {
        Charger { frame, credits_per_usd, batching, max, queues: Mutex::new(HashMap::new()) }
    }

    /// The time its batches decide at (the frame's clock).
    pub fn clock(&self) -> &Clock {
        &self.frame.clock
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<Uuid, Vec<Item>>> {
        // The map stays consistent whatever panicked while holding it: keep serving.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn submit(self: &Arc<Self>, spend: Spend, claim: Claim) -> AppResult<Stored> {
        let tenant = spend.tenant_id;
        let (reply, rx) = oneshot::channel();
        let item = Item { spend, claim, reply };
        if !self.batching {
            let me = self.clone();
            tokio::spawn(async move { batch::run(&me.frame, me.credits_per_usd, vec![item]).await });
        } else {
            let mut queues = self.queues();
            match queues.get_mut(&tenant) {
                Some(waiting) => waiting.push(item),
                None => {
                    queues.insert(tenant, Vec::new());
                    drop(queues);
                    tokio::spawn(self.clone().flush(tenant, item));
                }
            }
        }
        rx.await.map_err(|_| AppError::internal("charge batch ended without a reply"))?
    }

    /// Takes the next batch for `tenant`, or ends its turn when nothing is waiting.
    fn next_batch(&self, tenant: Uuid) -> Option<Vec<Item>> {
        let mut queues = self.queues();
        let waiting = queues.get_mut(&tenant)?;
        if waiting.is_empty() {
            queues.remove(&tenant);
            return None;
        }
        let n = waiting.len().min(self.max);
        Some(waiting.drain(..n).collect())
    }

    async fn flush(self: Arc<Self>, tenant: Uuid, first: Item) {
        let mut items = vec![first];
        loop {
            // A panic must not strand the tenant's queue: its replies drop (the callers get a
            // 500) and the next batch still runs.
            let run = batch::run(&self.frame, self.credits_per_usd, items);
            if AssertUnwindSafe(run).catch_unwind().await.is_err() {
                tracing::error!(%tenant, "charge batch panicked");
            }
            match self.next_batch(tenant) {
                Some(next) => items = next,
                None => return,
            }
        }
    }
}

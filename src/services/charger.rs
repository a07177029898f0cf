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
//! Invariant: batches run on spawned tasks; a client that disconnects drops only its
//! reply, never a transaction.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::batch;
use super::charges::Spend;
use crate::error::{AppError, AppResult};
use crate::idempotency::{Fingerprint, IdempotencyKey, Stored};
use crate::state::App;

pub struct Item {
    pub spend: Spend,
    pub key: IdempotencyKey,
    pub fp: Fingerprint,
    pub reply: oneshot::Sender<AppResult<Stored>>,
}

pub struct Charger {
    batching: bool,
    max: usize,
    /// Tenants with a batch in progress, and what queued behind it.
    queues: Mutex<HashMap<Uuid, Vec<Item>>>,
}

impl Charger {
    pub fn new(batching: bool, max: usize) -> Charger {
        Charger { batching, max, queues: Mutex::new(HashMap::new()) }
    }

    pub async fn submit(&self, app: Arc<App>, spend: Spend, key: IdempotencyKey, fp: Fingerprint) -> AppResult<Stored> {
        let tenant = spend.tenant_id;
        let (reply, rx) = oneshot::channel();
        let item = Item { spend, key, fp, reply };
        if !self.batching {
            tokio::spawn(async move { batch::run(&app, tenant, vec![item]).await });
        } else {
            let mut queues = self.queues.lock().expect("charger lock");
            match queues.get_mut(&tenant) {
                Some(waiting) => waiting.push(item),
                None => {
                    queues.insert(tenant, Vec::new());
                    drop(queues);
                    tokio::spawn(flush(app, tenant, item));
                }
            }
        }
        rx.await.map_err(|_| AppError::internal("charge batch ended without a reply"))?
    }

    /// Takes the next batch for `tenant`, or ends its turn when nothing is waiting.
    fn next_batch(&self, tenant: Uuid) -> Option<Vec<Item>> {
        let mut queues = self.queues.lock().expect("charger lock");
        let waiting = queues.get_mut(&tenant)?;
        if waiting.is_empty() {
            queues.remove(&tenant);
            return None;
        }
        let n = waiting.len().min(self.max);
        Some(waiting.drain(..n).collect())
    }
}

async fn flush(app: Arc<App>, tenant: Uuid, first: Item) {
    let mut items = vec![first];
    loop {
        // A panic must not strand the tenant's queue: its replies drop (the callers get a
        // 500) and the next batch still runs.
        if AssertUnwindSafe(batch::run(&app, tenant, items)).catch_unwind().await.is_err() {
            tracing::error!(%tenant, "charge batch panicked");
        }
        match app.charger.next_batch(tenant) {
            Some(next) => items = next,
            None => return,
        }
    }
}

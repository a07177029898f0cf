//! Group commit for charges and holds, across tenants.
//!
//! Charges go to one of `TALLY_CHARGE_LANES` lanes, chosen by a hash of the tenant id, so
//! all of a tenant's charges queue in one lane, in arrival order. While a lane's batch runs,
//! new charges (of any tenants routed to it) queue up; as soon as that batch holds its
//! tenants' locks, everything queued (up to `TALLY_CHARGE_BATCH_MAX`) becomes the next
//! batch, in its own database transaction. The next batch claims its keys and asks for its
//! locks while the one before decides and commits, and gets the locks the moment that
//! commit ends: a lane overlaps two batches, never more (a third waits for the first to
//! end), so a hot tenant's commits follow each other without the round trips in between.
//! Nobody waits on a timer: a lone charge runs at once. Every charge still gets its own
//! decision, idempotency key and response, sent only after its batch is durable.
//!
//! Lanes commit concurrently; a batch locks its tenants in id order (`frame::books`), so
//! two batches (of one lane or two, or of two replicas) touching the same tenants wait for
//! each other and never deadlock. Routing by tenant, and starting a lane's next batch only
//! once the one before holds its locks, keep a tenant's items in order: a later batch
//! decides a tenant's items after the earlier one committed them. (A batch that fails as a
//! whole retries its items one by one, possibly after the next batch: the one exception.)
//!
//! With batching off (`TALLY_CHARGE_BATCHING=off`) every charge is its own transaction:
//! the lock-per-charge design, kept to measure against.
//!
//! Invariant: a lane's turn runs on a spawned task, and each batch runs through the
//! posting frame (its own task too); a client that disconnects drops only its reply, never
//! a transaction.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use rust_decimal::Decimal;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::batch::{self, Item, Spend};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::frame::Frame;
use crate::idempotency::{Claim, Stored};

pub struct Charger {
    frame: Frame,
    credits_per_usd: Decimal,
    batching: bool,
    max: usize,
    lanes: Vec<Mutex<Lane>>,
}

/// One lane: whether a turn is running on it, and what queued behind its batch.
#[derive(Default)]
struct Lane {
    running: bool,
    waiting: VecDeque<Item>,
}

impl Charger {
    pub fn new(frame: Frame, config: &Config) -> Charger {
        Charger {
            frame,
            credits_per_usd: config.credits_per_usd,
            batching: config.charge_batching,
            max: config.charge_batch_max,
            lanes: (0..config.charge_lanes.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// The time its batches decide at (the frame's clock).
    pub fn clock(&self) -> &Clock {
        &self.frame.clock
    }

    /// The lane of a tenant: the same one for all of its charges.
    fn lane_of(&self, tenant: Uuid) -> usize {
        let mut h = DefaultHasher::new();
        tenant.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    fn lane(&self, lane: usize) -> MutexGuard<'_, Lane> {
        // The queue stays consistent whatever panicked while holding it: keep serving.
        self.lanes[lane].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items waiting for a batch, on every lane (for metrics and tests).
    pub fn queued(&self) -> usize {
        (0..self.lanes.len()).map(|l| self.lane(l).waiting.len()).sum()
    }

    /// Lanes with a batch in progress.
    pub fn busy(&self) -> usize {
        (0..self.lanes.len()).filter(|l| self.lane(*l).running).count()
    }

    pub async fn submit(self: &Arc<Self>, spend: Spend, claim: Claim) -> AppResult<Stored> {
        let (reply, rx) = oneshot::channel();
        let lane = self.lane_of(spend.tenant_id);
        let item = Item { spend, claim, reply };
        if !self.batching {
            let me = self.clone();
            tokio::spawn(async move { batch::run(&me.frame, me.credits_per_usd, vec![item]).await });
        } else {
            let mut l = self.lane(lane);
            l.waiting.push_back(item);
            if !l.running {
                l.running = true;
                drop(l);
                tokio::spawn(self.clone().flush(lane));
            }
        }
        rx.await.map_err(|_| AppError::internal("charge batch ended without a reply"))?
    }

    /// Takes the lane's next batch. With nothing waiting, and no batch of the lane in
    /// flight (`idle`), ends the lane's turn.
    fn next_batch(&self, lane: usize, idle: bool) -> Option<Vec<Item>> {
        let mut l = self.lane(lane);
        if l.waiting.is_empty() {
            if idle {
                l.running = false;
            }
            return None;
        }
        let n = l.waiting.len().min(self.max);
        Some(l.waiting.drain(..n).collect())
    }

    /// The lane's turn: its batches, two at a time at most, until nothing is waiting.
    async fn flush(self: Arc<Self>, lane: usize) {
        let mut in_flight: Option<JoinHandle<()>> = None;
        loop {
            let Some(items) = self.next_batch(lane, in_flight.is_none()) else {
                match in_flight.take() {
                    Some(last) => {
                        let _ = last.await;
                        continue;
                    }
                    None => return,
                }
            };
            let (tell, locked) = oneshot::channel();
            let batch = tokio::spawn(self.clone().run(lane, items, tell));
            // Once this batch holds its locks (or will never take them), and the one before
            // it has ended, the next one may start.
            let _ = locked.await;
            if let Some(before) = in_flight.replace(batch) {
                let _ = before.await;
            }
        }
    }

    async fn run(self: Arc<Self>, lane: usize, items: Vec<Item>, locked: oneshot::Sender<()>) {
        // A panic must not strand the lane's queue: its replies drop (the callers get a 500)
        // and the next batch still runs.
        let run = batch::run_telling(&self.frame, self.credits_per_usd, items, Some(locked));
        if AssertUnwindSafe(run).catch_unwind().await.is_err() {
            tracing::error!(lane, "charge batch panicked");
        }
    }
}

//! Group commit for charges and holds, across tenants.
//!
//! Charges go to one of `TALLY_CHARGE_LANES` lanes, chosen by a hash of the tenant id, so
//! all of a tenant's charges queue in one lane, in arrival order. While a lane's batch is
//! being committed, new charges (of any tenants routed to it) queue up; when the commit
//! ends, everything queued (up to `TALLY_CHARGE_BATCH_MAX`) goes into the next database
//! transaction. Nobody waits on a timer: a lone charge runs at once, and a charge waits at
//! most for the commit in progress on its lane. Every charge still gets its own decision,
//! idempotency key and response, sent only after its batch is durable.
//!
//! Lanes commit concurrently; a batch locks its tenants in id order (`frame::books`), so
//! two lanes (or two replicas) touching the same tenants wait for each other and never
//! deadlock. Routing by tenant keeps a tenant's items in order: they never race each other
//! from two lanes of one process.
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

    /// Takes the lane's next batch, or ends its turn when nothing is waiting.
    fn next_batch(&self, lane: usize) -> Option<Vec<Item>> {
        let mut l = self.lane(lane);
        if l.waiting.is_empty() {
            l.running = false;
            return None;
        }
        let n = l.waiting.len().min(self.max);
        Some(l.waiting.drain(..n).collect())
    }

    async fn flush(self: Arc<Self>, lane: usize) {
        while let Some(items) = self.next_batch(lane) {
            // A panic must not strand the lane's queue: its replies drop (the callers get a
            // 500) and the next batch still runs.
            let run = batch::run(&self.frame, self.credits_per_usd, items);
            if AssertUnwindSafe(run).catch_unwind().await.is_err() {
                tracing::error!(lane, "charge batch panicked");
            }
        }
    }
}

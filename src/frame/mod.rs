//! The posting frame: the one way the service runs a transaction that moves money (and
//! every other multi-statement write).
//!
//! A movement ([`Movement`]) fills in only the steps that differ; the frame runs them in
//! this order, in one database transaction:
//!
//! 1. claim the idempotency key(s) ([`crate::idempotency::claim_all`]): replays and
//!    refusals are answers already ([`Movement::claimed`]);
//! 2. [`Movement::prepare`]: rows the movement needs before the lock (a new tenant);
//! 3. lock the tenant(s) in id order through the one lock entry point ([`books`]),
//!    which sweeps expired bonus lots first;
//! 4. [`Movement::decide`] under the locks, staging ledger drafts ([`Books::stage`]);
//! 5. post the staged drafts through the ledger: the balances move in memory, each draft
//!    gets its balance after, and the rows are written (one statement for every tenant);
//! 6. [`Movement::write`]: the movement's own rows, and the responses to store;
//! 7. store the responses under their keys (one statement). A movement with
//!    [`Movement::WRITES_WITH_POSTING`] (the charge batch) has its rows, its keys and the
//!    ledger rows written by one statement after step 6 instead;
//! 8. for each locked tenant whose `available` went down: `balance.low` /
//!    `balance.depleted` in the outbox, in this transaction;
//! 9. commit (or roll back explicitly on any error, so every lock is free before the
//!    answer leaves);
//! 10. after the commit: the ledger postings counted (`crate::meters`), the auto top-up
//!     wake-up. Work here never turns a committed
//!     movement into a failure: an error is logged, the answers stand.
//!
//! Invariant: all of it runs on a task of its own ([`Frame::run`] spawns it), so a client
//! that disconnects can never drop a transaction half-way and leave a connection holding
//! locks. Handlers do not need to remember this: there is no other way in.

use std::future::Future;
use std::sync::Arc;

use axum::http::StatusCode;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::clock::Clock;
use crate::db::Rows;
use crate::error::{AppError, AppResult};
use crate::faults::Faults;
use crate::idempotency::{self, Claim, Claimed, Stored};
use crate::money::Money;
use crate::services::notify::low_balance::LowBalance;

pub mod books;

pub use books::{Books, Staged};

/// One movement of money (or one multi-statement write), as the steps that differ.
pub trait Movement: Send + Sized + 'static {
    /// What the caller gets once the transaction has committed.
    type Output: Send + 'static;

    /// The tenants whose ledgers this moves: locked in id order, each once. A tenant
    /// that does not exist is simply absent from the [`Books`].
    fn tenants(&self) -> Vec<Uuid> {
        Vec::new()
    }

    /// The idempotency keys to claim, in item order.
    fn claims(&self) -> Vec<&Claim> {
        Vec::new()
    }

    /// The claims' results, in the same order. Replays and refusals are this movement's
    /// answers already; `false` when nothing is left to do (no lock is taken then).
    fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        debug_assert!(results.is_empty(), "a movement with claims handles them");
        Ok(true)
    }

    /// Writes that must exist before the locks, in the same transaction.
    fn prepare(&mut self, _tx: &mut PgConnection) -> impl Future<Output = AppResult<()>> + Send {
        async { Ok(()) }
    }

    /// Under the locks: reads what it needs, decides, and stages its ledger drafts.
    fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> impl Future<Output = AppResult<()>> + Send;

    /// Whether the movement's own rows ride the posting statement: if so, the frame moves
    /// the balances in memory, calls [`Movement::write`] (which must then only build, not
    /// read the rows just posted), and writes the ledger rows, [`Movement::rows`] and the
    /// idempotency keys in one statement, saving the charge batch two round trips under
    /// its tenants' locks. Otherwise the ledger rows are written before `write`, and the
    /// keys after it.
    const WRITES_WITH_POSTING: bool = false;

    /// With [`Movement::WRITES_WITH_POSTING`]: the rows [`Movement::write`] built, for the
    /// posting statement to insert.
    fn rows(&self) -> Vec<Rows<'_>> {
        Vec::new()
    }

    /// After posting (or, with [`Movement::WRITES_WITH_POSTING`], after moving the
    /// balances in memory): writes the movement's own rows, and returns the responses to
    /// store under its claims (`claim` is the index in [`Movement::claims`]).
    fn write(
        &mut self,
        _tx: &mut PgConnection,
        _books: &Books,
    ) -> impl Future<Output = AppResult<Vec<Response>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The answer, once committed, with the stored responses back. In memory only: an
    /// error here can only be a bug (a step that did not run), never a lost commit.
    fn finish(self, stored: Vec<Response>) -> AppResult<Self::Output>;
}

/// The claim of a movement that has one idempotency key, and the replay it found: the
/// claim, replay and answer steps of such a movement, written once.
pub struct OneKey {
    pub claim: Claim,
    replay: Option<Stored>,
}

impl OneKey {
    pub fn new(claim: Claim) -> OneKey {
        OneKey { claim, replay: None }
    }

    /// For [`Movement::claims`].
    pub fn claims(&self) -> Vec<&Claim> {
        vec![&self.claim]
    }

    /// For [`Movement::claimed`]: a replay ends the movement, a refusal fails it.
    pub fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        self.replay = results.into_iter().next().transpose()?.flatten();
        Ok(self.replay.is_none())
    }

    /// For [`Movement::write`]: the one response, to store under the key.
    pub fn respond(status: StatusCode, body: &impl serde::Serialize) -> AppResult<Vec<Response>> {
        Ok(vec![Response { claim: 0, stored: idempotency::json(status, body)? }])
    }

    /// For [`Movement::finish`]: the replay, or the response just stored.
    pub fn finish(self, stored: Vec<Response>) -> AppResult<Stored> {
        match self.replay {
            Some(replay) => Ok(replay),
            None => stored.into_iter().next().map(|r| r.stored).ok_or_else(|| AppError::internal("no response stored")),
        }
    }
}

/// A response stored under the claim at index `claim`.
#[derive(Debug)]
pub struct Response {
    pub claim: usize,
    pub stored: Stored,
}

/// What the frame needs to run movements: the pool, the clock its decisions use, the
/// low-balance watch, and the fault injection points. Cheap to clone; services take it
/// instead of the whole application.
#[derive(Clone)]
pub struct Frame {
    pub pool: PgPool,
    pub clock: Clock,
    low: Arc<LowBalance>,
    faults: Arc<Faults>,
}

/// Tenants whose `available` the committed movement lowered, and to what.
type Lowered = Vec<(Uuid, Money)>;

impl Frame {
    pub fn new(pool: PgPool, clock: Clock, low: Arc<LowBalance>, faults: Arc<Faults>) -> Frame {
        Frame { pool, clock, low, faults }
    }

    /// Runs `m` through every step, on a task of its own.
    pub async fn run<M: Movement>(&self, m: M) -> AppResult<M::Output> {
        let frame = self.clone();
        tokio::spawn(async move { frame.execute(m).await }).await.map_err(AppError::internal)?
    }

    async fn execute<M: Movement>(self, m: M) -> AppResult<M::Output> {
        let (low, clock) = (self.low.clone(), self.clock.clone());
        let (m, lowered, stored, posted) = committed(&self.pool, move |tx| {
            Box::pin(async move {
                let mut m = m;
                let (lowered, stored, posted) = steps(tx, &low, &clock, &mut m).await?;
                Ok((m, lowered, stored, posted))
            })
        })
        .await?;
        crate::meters::postings(posted);
        if let Err(e) = self.after_commit(&lowered) {
            tracing::error!(error = %e, "work after a commit failed; the movement stands");
        }
        m.finish(stored)
    }

    /// Step 10: wakes the auto top-up worker for tenants now below an enabled threshold.
    fn after_commit(&self, lowered: &Lowered) -> AppResult<()> {
        if self.faults.failing_after_commit() {
            return Err(AppError::internal("the after-commit step failed (fault injection)"));
        }
        for (tenant, available) in lowered {
            self.low.after_commit(*tenant, *available);
        }
        Ok(())
    }
}

/// Steps 1 to 8, inside the transaction; also the kinds of the ledger transactions posted
/// (counted once committed).
async fn steps<M: Movement>(
    tx: &mut PgConnection,
    low: &LowBalance,
    clock: &Clock,
    m: &mut M,
) -> AppResult<(Lowered, Vec<Response>, Vec<&'static str>)> {
    let results = idempotency::claim_all(tx, &m.claims()).await?;
    if !m.claimed(results)? {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    m.prepare(tx).await?;
    let mut books = books::lock(tx, m.tenants(), clock.now()).await?;
    m.decide(tx, &mut books).await?;
    books.apply_staged()?;
    if !M::WRITES_WITH_POSTING {
        books.write_staged(tx, Vec::new()).await?;
    }
    let responses = m.write(tx, &books).await?;
    let claims = m.claims();
    let done = responses
        .iter()
        .map(|r| {
            claims.get(r.claim).map(|c| (*c, &r.stored)).ok_or_else(|| AppError::internal("response without a claim"))
        })
        .collect::<AppResult<Vec<_>>>()?;
    if M::WRITES_WITH_POSTING {
        let mut riders = m.rows();
        riders.push(idempotency::rows(&done));
        books.write_staged(tx, riders).await?;
    } else {
        idempotency::store_all(tx, &done).await?;
    }
    let moved = books.moved()?;
    low.within(tx, &moved).await?;
    let lowered =
        moved.into_iter().filter(|(_, before, after)| after < before).map(|(t, _, after)| (t, after)).collect();
    Ok((lowered, responses, books.posted_kinds().collect()))
}

/// Runs `work` in one transaction on a task of its own: committed when it returns `Ok`,
/// rolled back explicitly when it returns `Err`, so every lock it took (a tenant's row, the
/// advisory lock on an idempotency key) is released before the answer leaves and a quick
/// retry never sees it. The frame runs every movement this way; writes that move no money
/// and need more than one statement call this directly.
pub async fn transaction<T, F>(pool: &PgPool, work: F) -> AppResult<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, AppResult<T>> + Send + 'static,
{
    let pool = pool.clone();
    tokio::spawn(async move { committed(&pool, work).await }).await.map_err(AppError::internal)?
}

/// [`transaction`] on the caller's task (the frame's own, already spawned).
async fn committed<T, F>(pool: &PgPool, work: F) -> AppResult<T>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, AppResult<T>>,
{
    let mut tx = pool.begin().await?;
    match work(&mut tx).await {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = %rb, "rollback failed");
            }
            Err(e)
        }
    }
}

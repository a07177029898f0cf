//! Money the provider moved back on its own: a dispute (chargeback) that took a top-up's
//! payment back, or a refund made at the provider (Stripe's dashboard) rather than through
//! Tally. Either is recorded and clawed back in one movement, with the same rules and code
//! as a refund through Tally ([`clawback`]).
//!
//! Exactly once: one row per provider object (a `dp_…` or `re_…` id, unique per tenant),
//! found before anything is decided, so a provider event delivered twice (or a dispute
//! reported by two replicas) records one reversal. Never more than the top-up in total:
//! a dispute for more than what is left reverses what is left.

use sqlx::PgConnection;
use uuid::Uuid;

use super::clawback::{self, NewRefund, Plan, RefundKind, RefundOrigin, RefundRow, RefundView, COLUMNS};
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, Response, Staged};
use crate::money::Money;
use crate::vocab::TopUpStatus;

/// What recording a provider's reversal did.
#[derive(Debug)]
pub enum Reversed {
    /// Recorded now, with the balance after.
    Done(RefundView),
    /// This provider object was recorded before.
    Known(RefundView),
    /// Nothing left of the top-up to take back (or it never succeeded).
    Nothing,
}

/// One provider-started reversal or refund of a top-up.
pub struct ProviderMoved {
    pub tenant: Uuid,
    pub top_up: Uuid,
    pub kind: RefundKind,
    /// The provider's object (`dp_…`, `re_…`): the row's identity.
    pub provider_ref: String,
    /// `None`: whatever is left of the top-up.
    pub amount: Option<Money>,
    pub reason: String,
    pub actor: String,
}

pub async fn record(frame: &Frame, moved: ProviderMoved) -> AppResult<Reversed> {
    frame.run(Reverse { moved, row: None, taken: None, outcome: None }).await
}

struct Reverse {
    moved: ProviderMoved,
    row: Option<RefundRow>,
    taken: Option<(Plan, Option<Staged>)>,
    outcome: Option<Reversed>,
}

impl Movement for Reverse {
    type Output = Reversed;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.moved.tenant]
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let m = &self.moved;
        books.locked(m.tenant)?;
        let known: Option<RefundRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM top_up_refunds WHERE tenant_id = $1 AND provider_ref = $2"))
                .bind(m.tenant)
                .bind(&m.provider_ref)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = known {
            self.outcome = Some(Reversed::Known(row.into()));
            return Ok(());
        }
        let r = clawback::refundable(tx, m.tenant, m.top_up, None).await?;
        let left = r.left();
        let amount = m.amount.unwrap_or(left).min(left);
        if r.status != TopUpStatus::Succeeded || !amount.is_positive() {
            tracing::warn!(tenant = %m.tenant, top_up = %m.top_up, provider_ref = m.provider_ref, "a provider reversal with nothing left to take back");
            self.outcome = Some(Reversed::Nothing);
            return Ok(());
        }
        if m.amount.is_some_and(|a| a > left) {
            tracing::warn!(tenant = %m.tenant, top_up = %m.top_up, provider_ref = m.provider_ref, %left, "a provider reversal for more than is left of the top-up: reversing what is left");
        }
        let new = NewRefund {
            tenant: m.tenant,
            top_up: m.top_up,
            kind: m.kind,
            origin: RefundOrigin::Provider,
            amount,
            share: r.share_of(amount)?,
            currency: &r.currency,
            reason: &m.reason,
            provider_ref: Some(&m.provider_ref),
            claim: None,
            actor: &m.actor,
            lease: None,
        };
        let row = clawback::insert(tx, new).await?.ok_or_else(|| AppError::internal("reversal insert conflicted"))?;
        self.taken = Some(clawback::take_back(books, &row, r.lot)?);
        self.row = Some(row);
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        if let (Some(row), Some((plan, staged))) = (&self.row, self.taken) {
            let view = clawback::finish(tx, books, row, plan, staged, None).await?;
            self.outcome = Some(Reversed::Done(view));
        }
        Ok(Vec::new())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Reversed> {
        self.outcome.ok_or_else(|| AppError::internal("reversal not recorded"))
    }
}

/// The mock provider's simulated dispute (`POST /v1/admin/mock-provider/reversals`): takes
/// back whatever is left of the top-up, as a chargeback would. Each call is one dispute;
/// once nothing is left, a call is a 409.
pub async fn simulate_dispute(frame: &Frame, top_up: Uuid, actor: String) -> AppResult<RefundView> {
    let tenant: Uuid = sqlx::query_scalar("SELECT tenant_id FROM top_ups WHERE id = $1")
        .bind(top_up)
        .fetch_optional(&frame.pool)
        .await?
        .ok_or(AppError::NotFound)?;
    let moved = ProviderMoved {
        tenant,
        top_up,
        kind: RefundKind::Reversal,
        provider_ref: format!("dp_mock_{}", Uuid::new_v4().simple()),
        amount: None,
        reason: "dispute (simulated by the mock provider)".into(),
        actor,
    };
    match record(frame, moved).await? {
        Reversed::Done(view) | Reversed::Known(view) => Ok(view),
        Reversed::Nothing => Err(AppError::Conflict(
            "nothing is left to reverse: the top-up did not succeed or is fully refunded".into(),
        )),
    }
}

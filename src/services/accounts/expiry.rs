//! Expiry of bonus lots, run by the workers in every replica.
//!
//! The sweep itself is part of the posting frame's lock (every movement sweeps its
//! tenants' expired lots first); this only finds tenants with lots due and runs an empty
//! movement for each. Safe with many replicas: each tenant's sweep happens under its
//! ledger lock and re-reads what is due under it, so a lot is expired exactly once.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::AppResult;
use crate::frame::{Books, Frame, Movement, Response};

/// Expires every due lot of up to `limit` tenants. Returns how many lots expired.
pub async fn expire_lots(frame: &Frame, limit: i64) -> AppResult<usize> {
    let tenants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM bonus_lots WHERE remaining > 0 AND expires_at <= now() LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&frame.pool)
    .await?;
    let mut n = 0;
    for tenant in tenants {
        n += frame.run(Sweep { tenant, swept: 0 }).await?;
    }
    Ok(n)
}

/// Locks one tenant (which sweeps its expired lots) and does nothing else.
struct Sweep {
    tenant: Uuid,
    swept: usize,
}

impl Movement for Sweep {
    type Output = usize;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.tenant]
    }

    async fn decide(&mut self, _tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        self.swept = books.swept(self.tenant);
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<usize> {
        Ok(self.swept)
    }
}

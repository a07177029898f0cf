//! Services: one module per use case. Each opens its database transaction, applies the
//! rules and calls the ledger to post. HTTP handlers call these and nothing below them.
//!
//! Invariant: multi-statement database work runs through [`detached`], so a client that
//! disconnects can never drop a transaction half-way and leave a connection holding locks.

use std::future::Future;

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub mod adjustments;
pub mod api_keys;
pub mod auto_top_up;
pub mod balance;
pub mod batch;
pub mod charger;
pub mod charges;
pub mod estimates;
pub mod events;
pub mod expiry;
pub mod expiry_notices;
pub mod history;
pub mod holds;
pub mod low_balance;
pub mod payment_methods;
pub mod prices;
pub mod receipts;
pub mod refunds;
pub mod tenants;
pub mod top_up_attempts;
pub mod top_ups;
pub mod webhooks;

/// Runs `work` in one transaction: commits when it returns `Ok`, rolls back explicitly when
/// it returns `Err`, so every lock it took (the tenant's row, the advisory lock on an
/// idempotency key) is released before the answer leaves and a quick retry never sees it.
pub async fn in_transaction<T, F>(pool: &PgPool, work: F) -> AppResult<T>
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

/// Runs `work` on its own task: the request's cancellation cannot drop it half-way.
pub async fn detached<T: Send + 'static>(work: impl Future<Output = AppResult<T>> + Send + 'static) -> AppResult<T> {
    tokio::spawn(work).await.map_err(AppError::internal)?
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> AppResult<i64> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(_) => Err(AppError::invalid("limit must be between 1 and 200")),
        }
    }
    /// Cursors are the id of the last item of the previous page (ids are time-ordered).
    pub fn cursor(&self) -> AppResult<Option<Uuid>> {
        self.cursor.as_deref().map(|c| Uuid::parse_str(c).map_err(|_| AppError::invalid("invalid cursor"))).transpose()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Page<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(|r| id(r).to_string()) } else { None };
        Page { data: rows, next_cursor }
    }
}

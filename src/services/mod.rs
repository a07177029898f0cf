//! Services: the use cases, grouped by area. Each takes what it uses (the pool, the
//! posting frame, the charger, the payment provider), never the whole application, and
//! moves money only through the posting frame (`crate::frame`). HTTP handlers call these
//! and nothing below them.
//!
//! - [`spend`]: charges and the group-commit charger, holds, refunds, estimates;
//! - [`money_in`]: top-ups, their attempts with the provider, auto top-up, payment methods;
//! - [`notify`]: the event outbox, webhooks, low-balance events, expiry notices;
//! - [`accounts`]: tenants, API keys, adjustments, balances, history, prices, lot expiry;
//! - [`limits`]: spend limits per API key and per tenant, allowed models.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub mod accounts;
pub mod limits;
pub mod money_in;
pub mod notify;
pub mod spend;

/// `?limit=&cursor=` of every list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
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

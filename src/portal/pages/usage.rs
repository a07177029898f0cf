//! `/portal/usage`: net spend (charges minus refunds) per day as a chart, per model as
//! bars, per API key; every number also in a table. `?days=7|30|90` (default 30).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::{page, table_wrap, Nav};
use crate::error::AppError;
use crate::money::Money;
use crate::portal::backend::{self, UsageRow};
use crate::portal::chart::{self, Point};
use crate::portal::errors::PortalResult;
use crate::portal::format;
use crate::portal::session::PortalSession;
use crate::state::AppState;

const PERIODS: [i64; 3] = [7, 30, 90];

#[derive(Debug, Deserialize)]
pub struct UsageParams {
    days: Option<String>,
}

pub async fn get(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Query(q): Query<UsageParams>,
) -> PortalResult<Response> {
    let days = q.days.and_then(|d| d.parse().ok()).filter(|d| PERIODS.contains(d)).unwrap_or(30);
    let today = Utc::now().date_naive();
    let first = today - Duration::days(days - 1);
    let from = first.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let t = sess.tenant_id;
    let per_day = backend::usage(&s.pool, t, from, "day").await?;
    let per_model = backend::usage(&s.pool, t, from, "model").await?;
    let per_key = backend::usage(&s.pool, t, from, "api_key").await?;
    let labels = backend::key_labels(&s, t).await?;
    let currency = backend::balance(&s, t).await?.currency;
    let total = Money::checked_sum(per_day.iter().map(|r| r.amount))
        .ok_or_else(|| AppError::internal("usage total out of range"))?;
    let v = View { days, first, today, currency: &currency, per_day, per_model, per_key, labels, from, total };
    Ok(page(&sess, Nav::Usage, "Usage", v.render()).into_response())
}

struct View<'a> {
    days: i64,
    first: NaiveDate,
    today: NaiveDate,
    from: DateTime<Utc>,
    currency: &'a str,
    per_day: Vec<UsageRow>,
    per_model: Vec<UsageRow>,
    per_key: Vec<UsageRow>,
    labels: HashMap<uuid::Uuid, (String, String)>,
    total: Money,
}

/// Every day of the period, with zero for days without usage.
fn every_day(rows: &[UsageRow], first: NaiveDate, last: NaiveDate) -> Vec<(NaiveDate, Money, i64)> {
    let by_day: HashMap<&str, &UsageRow> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| {
            let key = d.format("%Y-%m-%d").to_string();
            by_day.get(key.as_str()).map_or((d, Money::ZERO, 0), |r| (d, r.amount, r.count))
        })
        .collect()
}

fn by_amount(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
    rows.sort_by(|a, b| b.amount.cmp(&a.amount).then_with(|| a.key.cmp(&b.key)));
    rows
}

fn charges(n: i64) -> String {
    if n == 1 {
        "1 charge".into()
    } else {
        format!("{n} charges")
    }
}

impl View<'_> {
    fn key_label(&self, key: &str) -> Markup {
        if key == "none" {
            return html! { "Without an API key" };
        }
        match key.parse().ok().and_then(|id| self.labels.get(&id)) {
            Some((name, prefix)) => html! { (name) " " code.muted.prefix { (prefix) "…" } },
            None => html! { "A deleted key" },
        }
    }

    fn render(mut self) -> Markup {
        let cur = self.currency;
        let m = |v: Money| format::money(v, cur);
        let days = every_day(&self.per_day, self.first, self.today);
        let total = self.total;
        let count: i64 = days.iter().map(|d| d.2).sum();
        let points: Vec<Point> = days
            .iter()
            .map(|(d, a, n)| Point {
                label: d.format("%b %-d").to_string(),
                value: *a,
                note: format!("{}: {}, {}", d.format("%Y-%m-%d"), m(*a), charges(*n)),
            })
            .collect();
        let models = by_amount(std::mem::take(&mut self.per_model));
        let keys = by_amount(std::mem::take(&mut self.per_key));
        let model_points: Vec<Point> = models
            .iter()
            .map(|r| Point {
                label: model_label(&r.key),
                value: r.amount,
                note: format!("{}: {}, {}", model_label(&r.key), m(r.amount), charges(r.count)),
            })
            .collect();
        let period = format!("{} to {} (UTC)", self.first.format("%Y-%m-%d"), self.today.format("%Y-%m-%d"));
        html! {
            nav.periods aria-label="Period" {
                span.muted { "Last" }
                @for p in PERIODS {
                    a href={ "/portal/usage?days=" (p) } aria-current=[(p == self.days).then_some("page")] { (p) " days" }
                    " "
                }
            }
            div.cards {
                div.card { p.label { "Spent in the last " (self.days) " days" } p.value { (m(total)) } p.help { (period) } }
                div.card { p.label { "Charges" } p.value { (count) } p.help { "Spend is net of refunds." } }
            }
            section aria-labelledby="day-h" {
                h2 id="day-h" { "Spend per day" }
                @if count == 0 && total.is_zero() {
                    p { "No usage in this period." }
                } @else {
                    (chart::columns("per-day", "Spend per day", &format!("Net spend per day from {period}; the numbers are in the table below."), cur, &points))
                }
                details {
                    summary { "Spend per day as a table" }
                    (table_wrap("Spend per day", html! {
                        table {
                            thead { tr { th scope="col" { "Day (UTC)" } th.num scope="col" { "Charges" } th.num scope="col" { "Spend" } } }
                            tbody {
                                @for (d, a, n) in days.iter().rev() {
                                    tr { th scope="row" { (d.format("%Y-%m-%d")) } td.num { (n) } td.num { (m(*a)) } }
                                }
                            }
                        }
                    }))
                }
            }
            section aria-labelledby="model-h" {
                h2 id="model-h" { "Spend per model" }
                @if models.is_empty() {
                    p { "No usage in this period." }
                } @else {
                    (chart::rows("per-model", "Spend per model", &format!("Net spend per model from {period}; the numbers are in the table below."), cur, &model_points))
                    (table_wrap("Spend per model", html! {
                        table {
                            thead { tr { th scope="col" { "Model" } th.num scope="col" { "Charges" } th.num scope="col" { "Spend" } } }
                            tbody {
                                @for r in &models {
                                    tr { th scope="row" { (model_label(&r.key)) } td.num { (r.count) } td.num { (m(r.amount)) } }
                                }
                            }
                        }
                    }))
                }
            }
            section aria-labelledby="key-h" {
                h2 id="key-h" { "Spend per API key" }
                @if keys.is_empty() {
                    p { "No usage in this period." }
                } @else {
                    (table_wrap("Spend per API key", html! {
                        table {
                            thead { tr { th scope="col" { "API key" } th.num scope="col" { "Charges" } th.num scope="col" { "Spend" } } }
                            tbody {
                                @for r in &keys {
                                    tr { th scope="row" { (self.key_label(&r.key)) } td.num { (r.count) } td.num { (m(r.amount)) } }
                                }
                            }
                        }
                    }))
                }
                p.muted.small { "Since " time datetime=(format::iso(self.from)) { (format::date(self.from)) } ". Manage keys on the " a href="/portal/api-keys" { "API keys" } " page." }
            }
        }
    }
}

/// Charges made with an explicit amount have no model.
fn model_label(key: &str) -> String {
    if key == "amount" {
        "Fixed-amount charges".into()
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_fills_gaps_with_zero() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let rows = vec![UsageRow { key: "2025-01-02".into(), amount: "3".parse().unwrap(), count: 2 }];
        let days = every_day(&rows, d("2025-01-01"), d("2025-01-03"));
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].1, Money::ZERO);
        assert_eq!((days[1].1.to_string(), days[1].2), ("3.00".into(), 2));
    }
}

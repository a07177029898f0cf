//! `/portal/transactions`: the ledger as the tenant sees it, newest first, with kind and
//! date filters, cursor paging (the API's cursors), and a CSV download of everything the
//! filter matches, written by the API's own CSV code.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::{notice, page, table_wrap, Nav, Tone};
use crate::portal::backend::{self, Page, TransactionView, TxnFilter, TxnKind, CSV_MAX_ROWS};

const _: () = assert!(CSV_MAX_ROWS == 20_000, "the page says 20,000");
use crate::portal::errors::PortalResult;
use crate::portal::format;
use crate::portal::session::PortalSession;
use crate::state::AppState;

const PAGE_SIZE: i64 = 50;

/// The filters as typed: kept as text so the form shows them back.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

fn day(raw: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").ok()
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// The filter, and what was wrong with the input (shown, and left out of the filter).
fn filter(p: &Params) -> (TxnFilter, Vec<String>) {
    let mut f = TxnFilter::default();
    let mut problems = Vec::new();
    let blank = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    if let Some(k) = blank(&p.kind) {
        match TxnKind::parse(&k) {
            Some(k) => f.kind = Some(k),
            None => problems.push("That kind of transaction does not exist; showing all kinds.".into()),
        }
    }
    if let Some(v) = blank(&p.from) {
        match day(&v) {
            Some(d) => f.from = Some(midnight(d)),
            None => problems.push("The “from” date must look like 2025-01-31.".into()),
        }
    }
    if let Some(v) = blank(&p.to) {
        // "To" is a whole day, included: up to the next midnight.
        match day(&v) {
            Some(d) => f.to = Some(midnight(d) + Duration::days(1)),
            None => problems.push("The “to” date must look like 2025-01-31.".into()),
        }
    }
    (f, problems)
}

/// The query string for these filters (and a cursor).
fn query(p: &Params, cursor: Option<&str>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("kind", &p.kind), ("from", &p.from), ("to", &p.to)] {
        if let Some(v) = v.as_deref().filter(|v| !v.trim().is_empty()) {
            q.append_pair(k, v.trim());
        }
    }
    if let Some(c) = cursor {
        q.append_pair("cursor", c);
    }
    q.finish()
}

pub async fn get(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Query(p): Query<Params>,
) -> PortalResult<Response> {
    let (f, mut problems) = filter(&p);
    let cursor = p.cursor.clone().filter(|c| uuid::Uuid::parse_str(c).is_ok());
    if p.cursor.is_some() && cursor.is_none() {
        problems.push("That page link is not valid; showing the newest transactions.".into());
    }
    let rows = backend::transactions(&s.pool, sess.tenant_id, &f, PAGE_SIZE, cursor.clone()).await?;
    let currency = backend::balance(&s, sess.tenant_id).await?.currency;
    let body = view(&p, &problems, &rows, cursor.is_some(), &currency);
    Ok(page(&sess, Nav::Transactions, "Transactions", body).into_response())
}

/// `GET /portal/transactions.csv`: the filter's transactions (newest first, at most
/// [`CSV_MAX_ROWS`]) as a CSV file.
pub async fn csv(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Query(p): Query<Params>,
) -> PortalResult<Response> {
    let (f, _) = filter(&p);
    let (body, truncated) = backend::transactions_csv(&s.pool, sess.tenant_id, &f).await?;
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let name = format!("attachment; filename=\"transactions-{}.csv\"", Utc::now().format("%Y-%m-%d"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&name).expect("ASCII file name"));
    if truncated {
        h.insert("x-truncated", HeaderValue::from_static("true"));
    }
    Ok(r)
}

fn view(p: &Params, problems: &[String], rows: &Page<TransactionView>, paged: bool, cur: &str) -> Markup {
    let selected = p.kind.as_deref().unwrap_or("");
    html! {
        @for problem in problems { (notice(Tone::Error, problem)) }
        form.filters method="get" action="/portal/transactions" {
            div.field {
                label for="kind" { "Kind" }
                select id="kind" name="kind" {
                    option value="" selected[selected.is_empty()] { "All kinds" }
                    @for k in TxnKind::ALL {
                        option value=(k.as_str()) selected[selected == k.as_str()] { (format::kind(k.as_str())) }
                    }
                }
            }
            div.field {
                label for="from" { "From" }
                input id="from" name="from" type="date" value=[p.from.as_deref()];
            }
            div.field {
                label for="to" { "To (included)" }
                input id="to" name="to" type="date" value=[p.to.as_deref()];
            }
            div.field.buttons {
                button type="submit" { "Filter" }
                " "
                a.button.secondary href={ "/portal/transactions.csv?" (query(p, None)) } download { "Download CSV" }
            }
        }
        p.muted.small { "The CSV file holds every transaction the filter matches (the newest 20,000 at most)." }
        @if rows.data.is_empty() {
            p { @if paged { "No more transactions." } @else { "No transactions match." } }
        } @else {
            (table_wrap("Transactions", html! {
                table.txns.stack {
                    thead {
                        tr {
                            th scope="col" { "Date (UTC)" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Description" }
                            th.num scope="col" { "Amount" }
                            th.num scope="col" { "Balance after" }
                        }
                    }
                    tbody {
                        @for t in &rows.data {
                            tr {
                                td.nowrap data-label="Date" { time datetime=(format::iso(t.created_at)) { (format::date_time(t.created_at)) } }
                                td data-label="Kind" { (format::kind(t.kind.as_str())) }
                                td data-label="Description" { (t.description.as_deref().unwrap_or("—")) }
                                td class={ "num " (t.direction) } data-label="Amount" { (format::signed(t.amount, t.direction, cur)) }
                                td.num data-label="Balance after" { (format::money(t.balance_after, cur)) }
                            }
                        }
                    }
                }
            }))
        }
        nav.pager aria-label="Pages" {
            @if paged { a href={ "/portal/transactions?" (query(p, None)) } { "← Newest" } }
            @if let Some(c) = &rows.next_cursor { a href={ "/portal/transactions?" (query(p, Some(c))) } { "Older →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_complain_in_words() {
        let p = Params {
            kind: Some("usage".into()),
            from: Some("2025-01-02".into()),
            to: Some("2025-01-31".into()),
            cursor: None,
        };
        let (f, problems) = filter(&p);
        assert!(problems.is_empty());
        assert_eq!(f.kind, Some(TxnKind::Usage));
        assert_eq!(f.to.unwrap().to_rfc3339(), "2025-02-01T00:00:00+00:00", "to is included");
        let (f, problems) =
            filter(&Params { kind: Some("nope".into()), from: Some("31/01/2025".into()), ..Default::default() });
        assert_eq!(problems.len(), 2);
        assert!(f.kind.is_none() && f.from.is_none());
        assert_eq!(query(&p, Some("c")), "kind=usage&from=2025-01-02&to=2025-01-31&cursor=c");
    }
}

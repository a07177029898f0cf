//! `/portal/top-ups`: top up with the card on file, the history (with each top-up's
//! refunds and reversals, [`super::top_up_refunds`]), receipts.
//!
//! The form carries an idempotency key made when the form is drawn (a hidden field), and
//! the top-up goes through the API's own service with it: sending the same form twice (a
//! double click, a reload, the back button) charges the card at most once and shows the
//! first outcome again. A decline or a bad amount is told in words on the page. A new
//! key is drawn only when the next submission is meant as a new top-up (after a decline);
//! after "no answer from the provider" the form keeps its key, so a retry is safe.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::top_up_refunds;
use super::{csrf, notice, page, read_only, table_wrap, Nav, Tone};
use crate::error::AppError;
use crate::portal::backend::{self, Page, RefundView, TopUpOutcome, TopUpRules, TopUpView};
use crate::portal::errors::{sentence, PortalResult};
use crate::portal::form::{parse_amount, Fields};
use crate::portal::format;
use crate::portal::headers::RECEIPT_CSP;
use crate::portal::session::{see_other, PortalSession};
use crate::portal::store::Session;
use crate::state::AppState;
use crate::vocab::{TopUpSource, TopUpStatus};

const PAGE_SIZE: i64 = 25;
/// How long a second submission waits for the first one of the same form to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(8);

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    cursor: Option<String>,
    done: Option<String>,
}

/// The form as it is drawn: its key, and what was typed.
struct FormState {
    key: String,
    amount: String,
}

const KEY_PREFIX: &str = "portal-top-up-";

fn new_key() -> String {
    format!("{KEY_PREFIX}{}", Uuid::new_v4())
}

/// Only keys this page makes: a form cannot be used to occupy any other idempotency key
/// of the tenant (one its platform's backends might use).
fn form_key(f: &Fields) -> Option<String> {
    let key = f.get("idempotency_key")?;
    let id = key.strip_prefix(KEY_PREFIX)?;
    Uuid::parse_str(id).ok().map(|_| key.to_string())
}

pub async fn get(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Query(p): Query<Params>,
) -> PortalResult<Response> {
    let mut msg = None;
    if let Some(id) = p.done.as_deref().and_then(|d| Uuid::parse_str(d).ok()) {
        // Scoped by the session's tenant: another tenant's id is simply not found.
        if let Ok(t) = backend::top_up_view(&s.pool, sess.tenant_id, id).await {
            if t.status == TopUpStatus::Succeeded {
                msg = Some((Tone::Ok, succeeded_text(&s, &sess, &t).await?));
            }
        }
    }
    let form = FormState { key: new_key(), amount: String::new() };
    render(&s, &sess, p.cursor, msg, form, StatusCode::OK).await
}

async fn succeeded_text(s: &AppState, sess: &Session, t: &TopUpView) -> PortalResult<String> {
    let b = backend::balance(s, sess.tenant_id).await?;
    let m = |v| format::money(v, &t.currency);
    let bonus =
        if t.bonus_amount.is_positive() { format!(" plus a {} bonus", m(t.bonus_amount)) } else { String::new() };
    Ok(format!(
        "Your top-up of {}{bonus} succeeded. Your total balance is now {}.",
        m(t.amount),
        format::money(b.total, &b.currency)
    ))
}

async fn render(
    s: &AppState,
    sess: &Session,
    cursor: Option<String>,
    msg: Option<(Tone, String)>,
    form: FormState,
    status: StatusCode,
) -> PortalResult<Response> {
    let cursor = cursor.filter(|c| Uuid::parse_str(c).is_ok());
    let history = backend::top_ups(&s.pool, sess.tenant_id, PAGE_SIZE, cursor.clone()).await?;
    let ids: Vec<Uuid> = history.data.iter().map(|t| t.id).collect();
    let refunds = backend::top_up_refunds(&s.pool, sess.tenant_id, &ids).await?;
    let card = backend::card(&s.pool, sess.tenant_id).await?;
    let rules = backend::top_up_rules(s);
    let cur = backend::balance(s, sess.tenant_id).await?.currency;
    let body = view(sess, msg, &form, card, &rules, (&history, &refunds), cursor.is_some(), &cur);
    Ok((status, page(sess, Nav::TopUps, "Top-ups", body)).into_response())
}

/// `POST /portal/top-ups`: `csrf`, `idempotency_key`, `amount`.
pub async fn create(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    let Some(key) = form_key(&form) else {
        return Err(AppError::invalid("this form is incomplete: reload the page and try again").into());
    };
    let typed = form.get("amount").unwrap_or_default().to_string();
    let same = |key: &str| FormState { key: key.to_string(), amount: typed.clone() };
    let amount = match parse_amount(&typed, "The amount") {
        Ok(a) => a,
        Err(why) => {
            return render(&s, &sess, None, Some((Tone::Error, why)), same(&key), StatusCode::BAD_REQUEST).await
        }
    };
    let started = tokio::time::Instant::now();
    let outcome = loop {
        let r = backend::top_up(&s, sess.tenant_id, sess.suspended, sess.id, &key, amount).await;
        // The same form sent again while the first is still with the provider: wait for
        // the first one's answer and show it, rather than "in progress".
        match r {
            Err(AppError::RequestInProgress) if started.elapsed() < WAIT_FOR_FIRST => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    let (status, text, form) = match outcome {
        Ok(TopUpOutcome::Succeeded(id)) => return Ok(see_other(&format!("/portal/top-ups?done={id}"))),
        Ok(TopUpOutcome::Declined(reason)) => (
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "Your card was declined ({reason}). No money was taken and your balance is unchanged. \
                 Try a smaller amount, or ask your platform to update the card on file."
            ),
            same(&new_key()),
        ),
        Err(AppError::InvalidRequest(why)) => (StatusCode::BAD_REQUEST, sentence(&why), same(&key)),
        Err(AppError::Unprocessable(_)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "There is no card on file, so nothing was charged. Ask your platform to add one.".into(),
            same(&key),
        ),
        Err(AppError::PaymentProviderUnavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The payment provider did not answer, so we cannot tell yet whether your card was charged. \
             Sending this form again is safe: it will never charge your card twice."
                .into(),
            same(&key),
        ),
        Err(AppError::RequestInProgress) => (
            StatusCode::CONFLICT,
            "This top-up is still being processed. Reload this page in a moment to see it in the history.".into(),
            same(&key),
        ),
        Err(AppError::IdempotencyKeyReused) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "This form was already used for a different amount, so nothing was charged. Here is a fresh form.".into(),
            same(&new_key()),
        ),
        Err(AppError::InsufficientFunds(_)) => {
            (StatusCode::PAYMENT_REQUIRED, "There is not enough credit for that.".into(), same(&key))
        }
        Err(e) => return Err(e.into()),
    };
    render(&s, &sess, None, Some((Tone::Error, text)), form, status).await
}

/// `GET /portal/top-ups/{id}/receipt`: the API's printable receipt, for this tenant's
/// top-ups only.
pub async fn receipt(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    let id: Uuid = id.parse().map_err(|_| AppError::NotFound)?;
    let html = backend::receipt(&s.pool, sess.tenant_id, id).await?;
    let mut r = html.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(RECEIPT_CSP));
    Ok(r)
}

fn limits(r: &TopUpRules, cur: &str) -> String {
    let mut t = format!("Between {} and {}", format::money(r.min, cur), format::money(r.max, cur));
    if r.whole_dollars {
        t.push_str(", in whole dollars");
    }
    t.push('.');
    if r.bonus_percent > rust_decimal::Decimal::ZERO {
        t.push_str(&format!(" Every top-up earns a {}% bonus.", r.bonus_percent.normalize()));
    }
    t
}

fn status_text(t: &TopUpView) -> String {
    match t.status {
        TopUpStatus::Succeeded => "Succeeded".into(),
        TopUpStatus::Failed => match &t.error {
            Some(e) => format!("Declined: {e}"),
            None => "Declined".into(),
        },
        TopUpStatus::Pending => "Processing".into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn view(
    s: &Session,
    msg: Option<(Tone, String)>,
    form: &FormState,
    card: Option<(String, String)>,
    rules: &TopUpRules,
    (history, refunds): (&Page<TopUpView>, &HashMap<Uuid, Vec<RefundView>>),
    paged: bool,
    cur: &str,
) -> Markup {
    let ro = read_only(s) || card.is_none();
    html! {
        @if let Some((tone, text)) = msg { (notice(tone, &text)) }
        section aria-labelledby="new-h" {
            h2 id="new-h" { "Top up now" }
            @match &card {
                Some((brand, last4)) => p { "Card on file: " strong { (brand_name(brand)) " ending " (last4) } "." },
                None => p { "There is no card on file. Your platform sets the card used for top-ups." },
            }
            form.stack method="post" action="/portal/top-ups" {
                (csrf(s))
                input type="hidden" name="idempotency_key" value=(form.key);
                fieldset disabled[ro] {
                    legend.visually-hidden { "Top up" }
                    label for="amount" { "Amount (" (cur) ")" }
                    p.hint id="amount-hint" { (limits(rules, cur)) }
                    input id="amount" name="amount" type="text" inputmode="decimal" required value=(form.amount)
                        autocomplete="off" aria-describedby="amount-hint";
                    button type="submit" { "Top up now" }
                }
            }
            p.muted.small { "The card is charged at once. Sending this form twice never charges twice." }
        }
        section aria-labelledby="history-h" {
            h2 id="history-h" { "History" }
            @if history.data.is_empty() {
                p { @if paged { "No more top-ups." } @else { "No top-ups yet." } }
            } @else {
                (table_wrap("Top-up history", html! {
                    table.topups.stack {
                        thead {
                            tr {
                                th scope="col" { "Date (UTC)" }
                                th.num scope="col" { "Amount" }
                                th.num scope="col" { "Bonus" }
                                th scope="col" { "Kind" }
                                th scope="col" { "Status" }
                                th scope="col" { "Card" }
                                th scope="col" { "Receipt" }
                            }
                        }
                        tbody {
                            @for t in &history.data {
                                @let back = refunds.get(&t.id).map(Vec::as_slice).unwrap_or_default();
                                tr {
                                    td.nowrap data-label="Date" { time datetime=(format::iso(t.created_at)) { (format::date_time(t.created_at)) } }
                                    td.num data-label="Amount" { (format::money(t.amount, &t.currency)) }
                                    td.num data-label="Bonus" { (format::money(t.bonus_amount, &t.currency)) }
                                    td data-label="Kind" { @if t.source == TopUpSource::Auto { "Automatic" } @else { "Manual" } }
                                    td data-label="Status" {
                                        // One block: on a narrow screen it sits beside its label.
                                        div {
                                            @match top_up_refunds::status(t, back) {
                                                Some((class, text)) => span class={ "status " (class) } { (text) },
                                                None => span class={ "status " (t.status) } { (status_text(t)) },
                                            }
                                            (top_up_refunds::details(back, &t.currency))
                                        }
                                    }
                                    td.nowrap data-label="Card" { (brand_name(&t.payment_method.brand)) " " (t.payment_method.last4) }
                                    td data-label="Receipt" {
                                        @if t.status == TopUpStatus::Succeeded {
                                            a href={ "/portal/top-ups/" (t.id) "/receipt" } { "Receipt" span.visually-hidden { " for " (format::date_time(t.created_at)) } }
                                        } @else { span.muted { "—" } }
                                    }
                                }
                            }
                        }
                    }
                }))
            }
            nav.pager aria-label="Pages" {
                @if paged { a href="/portal/top-ups" { "← Newest" } }
                @if let Some(c) = &history.next_cursor { a href={ "/portal/top-ups?cursor=" (c) } { "Older →" } }
            }
        }
    }
}

fn brand_name(b: &str) -> String {
    let mut c = b.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => "Card".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_own_keys_are_accepted() {
        let with = |k: &str| Fields(vec![("idempotency_key".into(), k.into())]);
        let k = new_key();
        assert_eq!(form_key(&with(&k)), Some(k));
        for bad in ["", "job-42", "portal-top-up-", "portal-top-up-not-a-uuid", "x-portal-top-up-0"] {
            assert_eq!(form_key(&with(bad)), None, "{bad}");
        }
        assert_eq!(form_key(&Fields::default()), None);
    }
}

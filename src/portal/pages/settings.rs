//! `/portal/settings`: auto top-up, the account's spend limits ([`super::spend_limits`]),
//! the webhook endpoint, and recent events.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::spend_limits::{self, LimitsForm};
use super::{csrf, notice, page, read_only, table_wrap, Nav, Tone};
use crate::error::AppError;
use crate::money::Money;
use crate::portal::backend::{self, AutoTopUpView, EventView, Page, TenantLimits, WebhookView};
use crate::portal::errors::{sentence, PortalResult};
use crate::portal::form::{parse_amount, Fields};
use crate::portal::format;
use crate::portal::session::{see_other, PortalSession};
use crate::portal::store::Session;
use crate::state::AppState;

const EVENTS_PAGE: i64 = 20;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    events_cursor: Option<String>,
    done: Option<String>,
}

/// The auto top-up form's fields as text (what is saved, or what was typed).
#[derive(Debug, Default)]
struct AutoForm {
    enabled: bool,
    threshold: String,
    amount: String,
    monthly_limit: String,
}

impl AutoForm {
    fn from_view(v: &AutoTopUpView) -> AutoForm {
        let text = |m: Option<Money>| m.map(|m| m.to_string()).unwrap_or_default();
        AutoForm {
            enabled: v.enabled,
            threshold: text(v.threshold),
            amount: text(v.amount),
            monthly_limit: text(v.monthly_limit),
        }
    }

    fn from_fields(f: &Fields) -> AutoForm {
        let text = |n: &str| f.get(n).unwrap_or_default().to_string();
        AutoForm {
            enabled: f.checked("enabled"),
            threshold: text("threshold"),
            amount: text("amount"),
            monthly_limit: text("monthly_limit"),
        }
    }
}

#[derive(Default)]
struct Messages {
    auto: Option<(Tone, String)>,
    limits: Option<(Tone, String)>,
    limits_form: Option<LimitsForm>,
    webhook: Option<(Tone, String)>,
    secret: Option<WebhookView>,
    /// What was typed into a form that was refused, shown back.
    auto_form: Option<AutoForm>,
    webhook_url: Option<String>,
}

pub async fn get(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Query(p): Query<Params>,
) -> PortalResult<Response> {
    let mut m = Messages::default();
    match p.done.as_deref() {
        Some("auto_top_up") => m.auto = Some((Tone::Ok, "Auto top-up settings saved.".into())),
        Some("spend_limits") => m.limits = Some((Tone::Ok, "Spend limits saved.".into())),
        _ => {}
    }
    render(&s, &sess, p.events_cursor, m, StatusCode::OK).await
}

async fn render(
    s: &AppState,
    sess: &Session,
    events_cursor: Option<String>,
    m: Messages,
    status: StatusCode,
) -> PortalResult<Response> {
    let t = sess.tenant_id;
    let cursor = events_cursor.filter(|c| Uuid::parse_str(c).is_ok());
    let auto = backend::auto_top_up(&s.pool, t).await?;
    let limits = backend::tenant_limits(s, t).await?;
    let hook = backend::webhook(&s.pool, t).await?;
    let events = backend::events(&s.pool, t, EVENTS_PAGE, cursor.clone()).await?;
    let currency = backend::balance(s, t).await?.currency;
    let body = view(sess, &auto, &limits, hook, &events, cursor.is_some(), m, &currency);
    Ok((status, page(sess, Nav::Settings, "Settings", body)).into_response())
}

/// `POST /portal/settings/auto-top-up`: the same service and checks as `PUT …/auto-top-up`.
pub async fn auto_top_up(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    let typed = AutoForm::from_fields(&form);
    let parsed = (|| {
        let threshold = parse_amount(&typed.threshold, "The threshold")?;
        let amount = parse_amount(&typed.amount, "The top-up amount")?;
        let limit = match typed.monthly_limit.trim() {
            "" => None,
            raw => Some(parse_amount(raw, "The monthly limit")?),
        };
        Ok::<_, String>((threshold, amount, limit))
    })();
    let refused = |why: String, status: StatusCode, typed: AutoForm| {
        let m = Messages { auto: Some((Tone::Error, why)), auto_form: Some(typed), ..Default::default() };
        (m, status)
    };
    let (m, status) = match parsed {
        Err(why) => refused(why, StatusCode::BAD_REQUEST, typed),
        Ok((threshold, amount, limit)) => {
            match backend::put_auto_top_up(&s, sess.tenant_id, sess.suspended, typed.enabled, threshold, amount, limit)
                .await
            {
                Ok(_) => return Ok(see_other("/portal/settings?done=auto_top_up#auto-top-up")),
                Err(AppError::InvalidRequest(why)) => refused(sentence(&why), StatusCode::BAD_REQUEST, typed),
                Err(AppError::Unprocessable(_)) => refused(
                    "Auto top-up needs a card on file. Ask your platform to add one.".into(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    typed,
                ),
                Err(e) => return Err(e.into()),
            }
        }
    };
    render(&s, &sess, None, m, status).await
}

/// `POST /portal/settings/spend-limits`: `day` and `month`, each an amount or empty (no
/// limit); the same service and checks as `PUT …/spend-limits`.
pub async fn spend_limits(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    let typed = LimitsForm::from_fields(&form);
    let refused = |why: String, typed: LimitsForm| Messages {
        limits: Some((Tone::Error, why)),
        limits_form: Some(typed),
        ..Default::default()
    };
    let m = match typed.parse() {
        Err(why) => refused(why, typed),
        Ok((day, month)) => match backend::put_tenant_limits(&s, sess.tenant_id, sess.suspended, day, month).await {
            Ok(_) => return Ok(see_other("/portal/settings?done=spend_limits#spend-limits")),
            Err(AppError::InvalidRequest(why)) => refused(sentence(&why), typed),
            Err(e) => return Err(e.into()),
        },
    };
    render(&s, &sess, None, m, StatusCode::BAD_REQUEST).await
}

/// `POST /portal/settings/webhook`: the same service and checks as `PUT …/webhook`; the
/// new signing secret is shown on this response only.
pub async fn webhook(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    let url = form.text("url").unwrap_or_default();
    let chosen: Vec<String> = form.all("events").into_iter().map(str::to_string).collect();
    // Every type ticked means "all", including types added later.
    if chosen.is_empty() && !sess.suspended {
        let m = Messages {
            webhook: Some((Tone::Error, "Choose at least one event to send.".into())),
            webhook_url: Some(url),
            ..Default::default()
        };
        return render(&s, &sess, None, m, StatusCode::BAD_REQUEST).await;
    }
    let events = if chosen.len() >= backend::event_types().len() { None } else { Some(chosen) };
    let (m, status) = match backend::put_webhook(&s, sess.tenant_id, sess.suspended, url.clone(), events).await {
        Ok(v) => (Messages { secret: Some(v), ..Default::default() }, StatusCode::OK),
        Err(AppError::InvalidRequest(why)) => (
            Messages { webhook: Some((Tone::Error, sentence(&why))), webhook_url: Some(url), ..Default::default() },
            StatusCode::BAD_REQUEST,
        ),
        Err(e) => return Err(e.into()),
    };
    render(&s, &sess, None, m, status).await
}

#[allow(clippy::too_many_arguments)]
fn view(
    s: &Session,
    auto: &AutoTopUpView,
    limits: &TenantLimits,
    hook: Option<(String, Option<Vec<String>>)>,
    events: &Page<EventView>,
    paged: bool,
    m: Messages,
    cur: &str,
) -> Markup {
    let ro = read_only(s);
    let f = m.auto_form.unwrap_or_else(|| AutoForm::from_view(auto));
    let money = |v: Money| format::money(v, cur);
    let subscribed = |t: &str| match &hook {
        Some((_, Some(list))) => list.iter().any(|e| e == t),
        _ => true,
    };
    let url = m.webhook_url.clone().or_else(|| hook.as_ref().map(|(u, _)| u.clone())).unwrap_or_default();
    html! {
        section aria-labelledby="auto-top-up-h" id="auto-top-up" {
            h2 id="auto-top-up-h" { "Auto top-up" }
            @if let Some((tone, text)) = &m.auto { (notice(*tone, text)) }
            dl.facts {
                dt { "State" } dd.state { (format::auto_state(&auto.state)) }
                dt { "Charged this month" } dd { (money(auto.spent_this_month)) }
                @if auto.consecutive_failures > 0 { dt { "Declines in a row" } dd { (auto.consecutive_failures) } }
                @if let Some(r) = &auto.disabled_reason { dt { "Turned off because" } dd { (r) } }
                @if let Some(a) = &auto.last_attempt {
                    dt { "Last attempt" }
                    dd {
                        (money(a.amount)) ", " (a.status) " on "
                        time datetime=(format::iso(a.at)) { (format::date_time(a.at)) }
                        @if let Some(e) = &a.error { " (" (e) ")" }
                    }
                }
            }
            form.stack method="post" action="/portal/settings/auto-top-up" {
                (csrf(s))
                fieldset disabled[ro] {
                    legend.visually-hidden { "Auto top-up settings" }
                    div.check {
                        input id="auto-enabled" name="enabled" type="checkbox" value="on" checked[f.enabled];
                        label for="auto-enabled" { "Top up automatically" }
                    }
                    label for="auto-threshold" { "When available credit falls below" }
                    input id="auto-threshold" name="threshold" type="text" inputmode="decimal" required value=(f.threshold);
                    label for="auto-amount" { "Top up in steps of" }
                    p.hint id="auto-amount-hint" { "Each automatic top-up charges your card a whole number of these steps, enough to get back above the threshold." }
                    input id="auto-amount" name="amount" type="text" inputmode="decimal" required value=(f.amount) aria-describedby="auto-amount-hint";
                    label for="auto-limit" { "At most per month (optional)" }
                    input id="auto-limit" name="monthly_limit" type="text" inputmode="decimal" value=(f.monthly_limit);
                    button type="submit" { "Save auto top-up" }
                }
            }
        }
        (spend_limits::section(s, limits, m.limits.as_ref(), m.limits_form.unwrap_or_else(|| LimitsForm::of(limits))))
        section aria-labelledby="webhook-h" id="webhook" {
            h2 id="webhook-h" { "Webhook" }
            @if let Some((tone, text)) = &m.webhook { (notice(*tone, text)) }
            @if let Some(v) = &m.secret {
                div.notice.ok role="status" {
                    p { strong { "Webhook saved." } " Events now go to " code { (v.url) } ". Copy the signing secret now: it is shown only this once." }
                    label for="webhook-secret" { "Signing secret" }
                    input.secret id="webhook-secret" type="text" readonly value=(v.secret) autocomplete="off" spellcheck="false";
                }
            }
            p { "We send events to this address, signed per the Standard Webhooks specification." }
            form.stack method="post" action="/portal/settings/webhook" {
                (csrf(s))
                fieldset disabled[ro] {
                    legend.visually-hidden { "Webhook endpoint" }
                    label for="webhook-url" { "Endpoint URL" }
                    input id="webhook-url" name="url" type="url" required placeholder="https://example.com/webhooks/tally" value=(url);
                    fieldset.events {
                        legend { "Events to send" }
                        @for t in backend::event_types() {
                            @let id = format!("event-{}", t.replace('.', "-"));
                            div.check {
                                input id=(id) name="events" type="checkbox" value=(t) checked[subscribed(t)];
                                label for=(id) { code { (t) } }
                            }
                        }
                    }
                    button type="submit" { "Save webhook" }
                }
            }
        }
        section aria-labelledby="events-h" id="events" {
            h2 id="events-h" { "Recent events" }
            @if events.data.is_empty() {
                p { @if paged { "No more events." } @else { "No events yet." } }
            } @else {
                (table_wrap("Recent events", html! {
                    table.events.stack {
                        thead { tr { th scope="col" { "Date (UTC)" } th scope="col" { "Event" } th scope="col" { "Details" } } }
                        tbody {
                            @for e in &events.data {
                                tr {
                                    td.nowrap data-label="Date" { time datetime=(format::iso(e.created_at)) { (format::date_time(e.created_at)) } }
                                    td data-label="Event" { code { (e.kind) } }
                                    td.details data-label="Details" {
                                        @if let Some(a) = e.data.get("amount").and_then(|a| a.as_str()).and_then(|a| a.parse::<Money>().ok()) {
                                            span.amount { (money(a)) " " }
                                        }
                                        details { summary { "Data" } code { (e.data.to_string()) } }
                                    }
                                }
                            }
                        }
                    }
                }))
            }
            nav.pager aria-label="Pages" {
                @if paged { a href="/portal/settings#events" { "← Newest" } }
                @if let Some(c) = &events.next_cursor { a href={ "/portal/settings?events_cursor=" (c) "#events" } { "Older →" } }
            }
        }
    }
}

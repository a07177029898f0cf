//! `/portal/api-keys`: the tenant's keys (name, prefix, status, created, last used, amount
//! used, spend limit with its window's spend, allowed models), creating one (its secret
//! shown on that one response only), renaming, disabling and enabling, and setting,
//! changing or removing its spend limit and allowed models ([`super::key_limits`]). The
//! same service as `…/api-keys` of the API.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::key_limits::{limit_text, limits_cell, LimitForm};
use super::{csrf, notice, page, read_only, table_wrap, Nav, Tone};
use crate::error::AppError;
use crate::portal::backend::{self, ApiKey, CreatedKey, KeyEdit, Page};
use crate::portal::errors::{sentence, PortalResult};
use crate::portal::form::Fields;
use crate::portal::format;
use crate::portal::session::{see_other, PortalSession};
use crate::portal::store::Session;
use crate::state::AppState;
use crate::vocab::KeyStatus;

const PAGE_SIZE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    cursor: Option<String>,
    done: Option<String>,
}

/// What the page says at its top.
enum Message {
    None,
    Done(&'static str),
    Created(CreatedKey),
    Error(String),
    /// The create form was refused: why, and what was typed (shown back).
    CreateRefused {
        why: String,
        name: String,
        limits: LimitForm,
    },
    /// A key's limits form was refused: that key's form is shown open, as typed.
    LimitsRefused {
        key: Uuid,
        why: String,
        limits: LimitForm,
    },
}

pub async fn get(
    State(s): State<AppState>,
    PortalSession(sess): PortalSession,
    Query(p): Query<Params>,
) -> PortalResult<Response> {
    let msg = match p.done.as_deref() {
        Some("renamed") => Message::Done("The key was renamed."),
        Some("disabled") => Message::Done("The key was disabled: it no longer works until you enable it again."),
        Some("enabled") => Message::Done("The key was enabled."),
        Some("limits") => Message::Done("The key's spend limit and models were saved."),
        _ => Message::None,
    };
    render(&s, &sess, p.cursor, msg, StatusCode::OK).await
}

async fn render(
    s: &AppState,
    sess: &Session,
    cursor: Option<String>,
    msg: Message,
    status: StatusCode,
) -> PortalResult<Response> {
    let cursor = cursor.filter(|c| Uuid::parse_str(c).is_ok());
    let keys = backend::keys(s, sess.tenant_id, PAGE_SIZE, cursor.clone()).await?;
    let currency = backend::balance(s, sess.tenant_id).await?.currency;
    let models = backend::models(&s.pool).await?;
    let body = view(sess, &keys, cursor.is_some(), &msg, &currency, &models);
    Ok((status, page(sess, Nav::ApiKeys, "API keys", body)).into_response())
}

/// `POST /portal/api-keys`: creates a key (with its spend limit and allowed models, if
/// given) and shows its secret, this once.
pub async fn create(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    let name = form.text("name").unwrap_or_default();
    let typed = LimitForm::from_fields(&form);
    let refused = |why: String, name: String, limits: LimitForm| Message::CreateRefused { why, name, limits };
    let limits = match typed.parse() {
        Ok(l) => l,
        Err(why) => return render(&s, &sess, None, refused(why, name, typed), StatusCode::BAD_REQUEST).await,
    };
    match backend::create_key(&s, sess.tenant_id, sess.suspended, name.clone(), limits).await {
        Ok(created) => render(&s, &sess, None, Message::Created(created), StatusCode::CREATED).await,
        Err(AppError::InvalidRequest(why)) => {
            render(&s, &sess, None, refused(sentence(&why), name, typed), StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /portal/api-keys/{key_id}`: `action` = `rename` (with `name`), `disable`, `enable`,
/// or `limits` (with the fields of [`LimitForm`]: the key's spend limit and allowed models,
/// both replaced).
pub async fn update(
    State(s): State<AppState>,
    sess: PortalSession,
    Path(key): Path<String>,
    form: Fields,
) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    // Not a UUID: no such key, like one of another tenant.
    let key: Uuid = key.parse().map_err(|_| AppError::NotFound)?;
    let typed = LimitForm::from_fields(&form);
    let limits_refused = |why: String| Message::LimitsRefused { key, why, limits: typed.clone() };
    let (edit, done) = match form.get("action") {
        Some("rename") => {
            (KeyEdit { name: Some(form.text("name").unwrap_or_default()), ..Default::default() }, "renamed")
        }
        Some("disable") => (KeyEdit { enabled: Some(false), ..Default::default() }, "disabled"),
        Some("enable") => (KeyEdit { enabled: Some(true), ..Default::default() }, "enabled"),
        Some("limits") => match typed.parse() {
            Ok(l) => (KeyEdit { limits: Some(l), ..Default::default() }, "limits"),
            Err(why) => return render(&s, &sess, None, limits_refused(why), StatusCode::BAD_REQUEST).await,
        },
        _ => return Err(AppError::invalid("unknown action").into()),
    };
    let is_limits = edit.limits.is_some();
    match backend::update_key(&s, sess.tenant_id, sess.suspended, key, edit).await {
        Ok(_) if is_limits => Ok(see_other(&format!("/portal/api-keys?done={done}#key-{key}"))),
        Ok(_) => Ok(see_other(&format!("/portal/api-keys?done={done}"))),
        Err(AppError::InvalidRequest(why)) => {
            let msg = if is_limits { limits_refused(sentence(&why)) } else { Message::Error(sentence(&why)) };
            render(&s, &sess, None, msg, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e.into()),
    }
}

fn view(s: &Session, keys: &Page<ApiKey>, paged: bool, msg: &Message, cur: &str, models: &[String]) -> Markup {
    let ro = read_only(s);
    let (name, new_limits) = match msg {
        Message::CreateRefused { name, limits, .. } => (name.as_str(), limits.clone()),
        _ => ("", LimitForm::blank()),
    };
    let refused = match msg {
        Message::LimitsRefused { key, why, limits } => Some((*key, why.as_str(), limits)),
        _ => None,
    };
    html! {
        @match msg {
            Message::Done(text) => (notice(Tone::Ok, text)),
            Message::Error(text) | Message::CreateRefused { why: text, .. } | Message::LimitsRefused { why: text, .. } => {
                (notice(Tone::Error, text))
            }
            Message::Created(k) => {
                div.notice.ok.created role="status" {
                    p { strong { "Key “" (k.name) "” was created." } " Copy it now: it is shown only this once and cannot be recovered." }
                    label for="new-key" { "Your new API key" }
                    input.secret id="new-key" type="text" readonly value=(k.key) autocomplete="off" spellcheck="false";
                }
            }
            Message::None => {}
        }
        section aria-labelledby="create-h" {
            h2 id="create-h" { "Create a key" }
            form.stack method="post" action="/portal/api-keys" {
                (csrf(s))
                fieldset disabled[ro] {
                    legend.visually-hidden { "New API key" }
                    label for="key-name" { "Name" }
                    p.hint id="key-name-hint" { "What the key is for, e.g. “production backend”." }
                    input id="key-name" name="name" type="text" required maxlength="200" aria-describedby="key-name-hint" value=(name);
                    details.new-limits open[new_limits != LimitForm::blank()] {
                        summary { "Spend limit and models (optional)" }
                        (new_limits.inputs("new"))
                        @if !models.is_empty() {
                            p.hint { "Models priced here: " @for (i, m) in models.iter().enumerate() { @if i > 0 { ", " } code { (m) } } "." }
                        }
                    }
                    button type="submit" { "Create key" }
                }
            }
        }
        section aria-labelledby="keys-h" {
            h2 id="keys-h" { "Your keys" }
            @if keys.data.is_empty() {
                p { @if paged { "No more keys." } @else { "No keys yet." } }
            } @else {
                (table_wrap("API keys", html! {
                    table.keys.stack {
                        thead {
                            tr {
                                th scope="col" { "Name" }
                                th scope="col" { "Prefix" }
                                th scope="col" { "Status" }
                                th scope="col" { "Created" }
                                th scope="col" { "Last used" }
                                th.num scope="col" { "Used" }
                                th scope="col" { "Limits" }
                                th scope="col" { "Actions" }
                            }
                        }
                        tbody {
                            @for k in &keys.data {
                                (row(s, k, ro, cur, refused.filter(|r| r.0 == k.id).map(|r| (r.1, r.2))))
                            }
                        }
                    }
                }))
            }
            nav.pager aria-label="Pages" {
                @if paged { a href="/portal/api-keys" { "← First page" } }
                @if let Some(c) = &keys.next_cursor { a href={ "/portal/api-keys?cursor=" (c) } { "More keys →" } }
            }
        }
    }
}

/// One key; `refused`: its limits form was just refused (why, and what was typed).
fn row(s: &Session, k: &ApiKey, ro: bool, cur: &str, refused: Option<(&str, &LimitForm)>) -> Markup {
    let action = format!("/portal/api-keys/{}", k.id);
    let enabled = k.status == KeyStatus::Enabled;
    let input_id = format!("rename-{}", k.id);
    let limits = refused.map(|r| r.1.clone()).unwrap_or_else(|| LimitForm::of(k));
    html! {
        tr id={ "key-" (k.id) } {
            th scope="row" { (k.name) }
            td data-label="Prefix" { code { (k.prefix) "…" } }
            td data-label="Status" { span class={ "status " (k.status) } { @if enabled { "Enabled" } @else { "Disabled" } } }
            td.nowrap data-label="Created" { time datetime=(format::iso(k.created_at)) { (format::date(k.created_at)) } }
            td data-label="Last used" {
                @match k.last_used_at {
                    // Date and time each kept whole, so a narrow column breaks between them.
                    Some(t) => time datetime=(format::iso(t)) {
                        span.nowrap { (format::date(t)) } " " span.nowrap { (t.format("%H:%M UTC")) }
                    },
                    None => span.muted { "Never" },
                }
            }
            td.num data-label="Used" { (format::money(k.used_amount, cur)) }
            td.limit data-label="Limits" { (limits_cell(k, cur)) }
            td.actions {
                form.rename method="post" action=(action) {
                    (csrf(s))
                    input type="hidden" name="action" value="rename";
                    label.visually-hidden for=(input_id) { "New name for " (k.name) }
                    input id=(input_id) name="name" type="text" required maxlength="200" value=(k.name) disabled[ro];
                    button.secondary type="submit" disabled[ro] { "Rename" }
                }
                form method="post" action=(action) {
                    (csrf(s))
                    @if enabled {
                        input type="hidden" name="action" value="disable";
                        button.danger type="submit" disabled[ro] aria-label={ "Disable " (k.name) } { "Disable" }
                    } @else {
                        input type="hidden" name="action" value="enable";
                        button.secondary type="submit" disabled[ro] aria-label={ "Enable " (k.name) } { "Enable" }
                    }
                }
                details.limits open[refused.is_some()] {
                    summary { "Spend limit and models" span.visually-hidden { " of " (k.name) } }
                    form.limits method="post" action=(action) {
                        (csrf(s))
                        input type="hidden" name="action" value="limits";
                        @if let Some((why, _)) = refused { p.error role="alert" { (why) } }
                        fieldset disabled[ro] {
                            legend.visually-hidden { "Spend limit and models of " (k.name) }
                            (limits.inputs(&format!("k-{}", k.id)))
                            button type="submit" {
                                "Save" span.visually-hidden { " the spend limit and models of " (k.name) }
                            }
                        }
                    }
                    @if let Some(l) = k.spend_limit {
                        p.small.muted { "Now: " (limit_text(l, cur)) ". To remove the limit, empty the amount and save." }
                    }
                }
            }
        }
    }
}

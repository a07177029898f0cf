//! `/portal/api-keys`: the tenant's keys (name, prefix, status, created, last used, amount
//! used), creating one (its secret shown on that one response only), renaming, disabling
//! and enabling. The same service as `…/api-keys` of the API.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::{csrf, notice, page, read_only, table_wrap, Nav, Tone};
use crate::error::AppError;
use crate::portal::backend::{self, ApiKey, CreatedKey, Page};
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
    let keys = backend::keys(&s.pool, sess.tenant_id, PAGE_SIZE, cursor.clone()).await?;
    let currency = backend::balance(&s.pool, sess.tenant_id).await?.currency;
    let body = view(sess, &keys, cursor.is_some(), &msg, &currency);
    Ok((status, page(sess, Nav::ApiKeys, "API keys", body)).into_response())
}

/// `POST /portal/api-keys`: creates a key and shows its secret, this once.
pub async fn create(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let PortalSession(sess) = sess;
    let name = form.text("name").unwrap_or_default();
    match backend::create_key(&s, sess.tenant_id, sess.suspended, name).await {
        Ok(created) => render(&s, &sess, None, Message::Created(created), StatusCode::CREATED).await,
        Err(AppError::InvalidRequest(why)) => {
            render(&s, &sess, None, Message::Error(sentence(&why)), StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /portal/api-keys/{key_id}`: `action` = `rename` (with `name`), `disable`, `enable`.
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
    let (name, enabled, done) = match form.get("action") {
        Some("rename") => (Some(form.text("name").unwrap_or_default()), None, "renamed"),
        Some("disable") => (None, Some(false), "disabled"),
        Some("enable") => (None, Some(true), "enabled"),
        _ => return Err(AppError::invalid("unknown action").into()),
    };
    match backend::update_key(&s, sess.tenant_id, sess.suspended, key, name, enabled).await {
        Ok(_) => Ok(see_other(&format!("/portal/api-keys?done={done}"))),
        Err(AppError::InvalidRequest(why)) => {
            render(&s, &sess, None, Message::Error(sentence(&why)), StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e.into()),
    }
}

fn view(s: &Session, keys: &Page<ApiKey>, paged: bool, msg: &Message, cur: &str) -> Markup {
    let ro = read_only(s);
    html! {
        @match msg {
            Message::Done(text) => (notice(Tone::Ok, text)),
            Message::Error(text) => (notice(Tone::Error, text)),
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
                    input id="key-name" name="name" type="text" required maxlength="200" aria-describedby="key-name-hint";
                    // LATER(issue 9, spend limits): a spend limit (amount and window) and the
                    // allowed models go here, sent to the same key service as the API's.
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
                                // LATER(issue 9, spend limits): spend limit, spent in window, allowed models.
                                th scope="col" { "Actions" }
                            }
                        }
                        tbody {
                            @for k in &keys.data { (row(s, k, ro, cur)) }
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

fn row(s: &Session, k: &ApiKey, ro: bool, cur: &str) -> Markup {
    let action = format!("/portal/api-keys/{}", k.id);
    let enabled = k.status == KeyStatus::Enabled;
    let input_id = format!("rename-{}", k.id);
    html! {
        tr {
            th scope="row" { (k.name) }
            td data-label="Prefix" { code { (k.prefix) "…" } }
            td data-label="Status" { span class={ "status " (k.status) } { @if enabled { "Enabled" } @else { "Disabled" } } }
            td.nowrap data-label="Created" { time datetime=(format::iso(k.created_at)) { (format::date(k.created_at)) } }
            td.nowrap data-label="Last used" {
                @match k.last_used_at {
                    Some(t) => time datetime=(format::iso(t)) { (format::date_time(t)) },
                    None => span.muted { "Never" },
                }
            }
            td.num data-label="Used" { (format::money(k.used_amount, cur)) }
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
            }
        }
    }
}

//! Getting in and out: the one-use link, the expired page, sign-out, unknown addresses.

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::errors::{PortalError, PortalResult};
use super::form::Fields;
use super::pages;
use super::session::{self, see_other, PortalSession};
use super::store;
use crate::error::AppError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct EnterQuery {
    token: Option<String>,
}

/// `GET /portal/enter?token=…`: opens a session and 303s to `/portal`; a link that is
/// unknown, used or expired 303s to `/portal/expired` and sets nothing.
pub async fn enter(State(s): State<AppState>, Query(q): Query<EnterQuery>) -> PortalResult<Response> {
    let Some(token) = q.token else { return Ok(see_other("/portal/expired")) };
    let (pool, ttl) = (s.pool.clone(), s.config.portal.session_ttl);
    let Some(opened) = store::redeem(&pool, &token, ttl).await? else {
        return Ok(see_other("/portal/expired"));
    };
    tracing::info!(tenant = %opened.tenant_id, "portal session opened");
    let mut r = see_other("/portal");
    r.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&opened.token, ttl.as_secs(), s.config.portal.secure_cookie()));
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct ExpiredQuery {
    signed_out: Option<String>,
}

/// The page every request without a live session ends on.
pub async fn expired(Query(q): Query<ExpiredQuery>) -> Response {
    let body = if q.signed_out.is_some() {
        html! {
            h1 { "You have signed out" }
            p { "To open your portal again, ask your platform for a new portal link." }
        }
    } else {
        html! {
            h1 { "This portal link has expired" }
            p { "Your link was already used, is more than 10 minutes old, or your session ended (sessions last 12 hours)." }
            p { strong { "Ask your platform for a new portal link" } " — the service you buy credit from can send you one." }
        }
    };
    pages::bare("Portal link expired", body).into_response()
}

/// `POST /portal/sign-out`: ends the session (kept, marked ended) and clears the cookie.
pub async fn sign_out(State(s): State<AppState>, sess: PortalSession, form: Fields) -> PortalResult<Response> {
    sess.check(&form)?;
    let (pool, tenant, id) = (s.pool.clone(), sess.0.tenant_id, sess.0.id);
    store::end(&pool, tenant, id).await?;
    let mut r = see_other("/portal/expired?signed_out=1");
    r.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(s.config.portal.secure_cookie()));
    Ok(r)
}

/// Any other `/portal/…` address: without a session, the expired page like everything
/// else; with one, a 404 page.
pub async fn not_found(State(s): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    match PortalSession::from_request_parts(&mut parts, &s).await {
        Ok(_) => PortalError::App(AppError::NotFound).into_response(),
        Err(to_expired) => to_expired,
    }
}

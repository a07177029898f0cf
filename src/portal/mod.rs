//! The tenant portal: a dashboard served by Tally itself, server-rendered HTML without
//! scripts, for one tenant per browser session.
//!
//! How one gets in: `POST /v1/tenants/{id}/portal-sessions` (admin or the tenant's own
//! key) returns a one-use link valid 10 minutes; opening it sets a session cookie for that
//! tenant, valid 12 hours ([`store`], [`session`]).
//!
//! Invariants:
//! - a page sees exactly the session's tenant: the tenant id comes from the session row,
//!   never from the URL, a query string or a form field; ids in URLs and forms are looked
//!   up within that tenant ([`backend`]);
//! - every form that changes something is a POST carrying the session's CSRF token, checked
//!   before anything else is read, and goes through the same services as the JSON API
//!   ([`backend`]); a suspended tenant's portal is read-only;
//! - every response carries the security headers of [`headers`]; nothing is loaded from
//!   another host; the stylesheet is compiled into the binary.

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;

use crate::state::AppState;

pub mod api;
pub mod backend;
pub mod chart;
pub mod config;
pub mod entry;
pub mod errors;
pub mod form;
pub mod format;
pub mod headers;
pub mod layout;
pub mod pages;
pub mod session;
pub mod store;

/// The stylesheet's address; the version in it changes with the file, so it can be cached.
pub use layout::STYLESHEET;

const CSS: &str = include_str!("portal.css");

/// The portal's routes, and the API route that makes portal links.
pub fn router(state: AppState) -> Router {
    use pages::{api_keys, overview, settings, top_ups, transactions, usage};
    let pages = Router::new()
        .route("/portal", get(overview::get))
        .route("/portal/", get(|| async { session::see_other("/portal") }))
        .route("/portal/usage", get(usage::get))
        .route("/portal/transactions", get(transactions::get))
        .route("/portal/transactions.csv", get(transactions::csv))
        .route("/portal/api-keys", get(api_keys::get).post(api_keys::create))
        .route("/portal/api-keys/{key_id}", post(api_keys::update).get(back_to("/portal/api-keys")))
        .route("/portal/top-ups", get(top_ups::get).post(top_ups::create))
        .route("/portal/top-ups/{top_up_id}/receipt", get(top_ups::receipt))
        .route("/portal/settings", get(settings::get))
        .route("/portal/settings/auto-top-up", post(settings::auto_top_up).get(back_to("/portal/settings")))
        .route("/portal/settings/spend-limits", post(settings::spend_limits).get(back_to("/portal/settings")))
        .route("/portal/settings/webhook", post(settings::webhook).get(back_to("/portal/settings")))
        .route("/portal/sign-out", post(entry::sign_out).get(back_to("/portal")))
        .route("/portal/enter", get(entry::enter))
        .route("/portal/expired", get(entry::expired))
        .route("/portal/static/portal.css", get(stylesheet))
        .route("/portal/{*rest}", any(entry::not_found))
        .layer(middleware::map_response(headers::secure));
    let api = Router::new()
        .route("/v1/tenants/{tenant_id}/portal-sessions", post(api::create_session))
        .method_not_allowed_fallback(|| async { crate::error::AppError::MethodNotAllowed });
    pages.merge(api).with_state(state)
}

/// A GET on a form's address (a bookmark, a typed URL): the page the form is on, for a
/// session; the expired page without one, like every other portal address.
fn back_to(
    page: &'static str,
) -> impl Fn(session::PortalSession) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |_| std::future::ready(session::see_other(page))
}

async fn stylesheet() -> Response {
    let mut r = CSS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    // Versioned address: safe to keep for a day (pages themselves are never stored).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    r
}

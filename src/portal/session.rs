//! The portal session as a request extractor, its cookie, and the CSRF check.
//!
//! Invariants:
//! - the cookie is `HttpOnly`, `SameSite=Strict`, `Path=/portal` (never sent to the JSON
//!   API), `Secure` when the public URL is https, and holds a random token whose hash is
//!   the session's only key;
//! - a request without a live session never reaches a page: it gets 303 to
//!   `/portal/expired` (see [`no_session`] for the one same-site hop before that);
//! - a form is accepted only with the session's CSRF token, compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::errors::PortalError;
use super::form::Fields;
use super::store::{self, Session};
use crate::rate_limit::Bucket;
use crate::state::AppState;

pub const COOKIE: &str = "tally_portal";
/// The name of the hidden field every state-changing form carries.
pub use super::layout::CSRF_FIELD;

/// The live session of the request: the tenant it sees, and its CSRF token.
pub struct PortalSession(pub Session);

impl FromRequestParts<AppState> for PortalSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let found = match cookie(&parts.headers, COOKIE) {
            Some(token) => {
                store::session(&state.pool, &token).await.map_err(|e| PortalError::from(e).into_response())?
            }
            None => None,
        };
        let sess = found.ok_or_else(|| no_session(parts))?;
        // The portal's sessions count as their tenant, in the tenant API keys' class.
        crate::http::throttle::admit(parts, &state.rate_limits, Bucket::Portal(sess.tenant_id))
            .map_err(|e| PortalError::from(e).into_response())?;
        Ok(PortalSession(sess))
    }
}

impl PortalSession {
    /// Refuses a form whose CSRF token is missing or not this session's.
    pub fn check(&self, form: &Fields) -> Result<(), PortalError> {
        match form.get(CSRF_FIELD) {
            Some(t) if store::same_secret(t, &self.0.csrf_token) => Ok(()),
            _ => Err(PortalError::Csrf),
        }
    }
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{COOKIE}={token}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&v).expect("tokens are hex")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0{secure}"))
        .expect("static cookie")
}

pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_str(location).expect("portal paths are ASCII"));
    r
}

/// No live session: 303 to `/portal/expired`.
///
/// One exception, for the link in an e-mail: a `SameSite=Strict` cookie is not sent on a
/// navigation that another site started, and that includes the redirect from
/// `/portal/enter` to `/portal` (the cookie was just set, but is withheld). Such a request
/// (`Sec-Fetch-Site: cross-site`, a top-level GET navigation) gets a page that reloads the
/// same address from this site, which does carry the cookie; without one it then ends
/// at `/portal/expired` like any other.
pub fn no_session(parts: &Parts) -> Response {
    let h = &parts.headers;
    let is = |name: &str, value: &str| h.get(name).and_then(|v| v.to_str().ok()) == Some(value);
    if parts.method == Method::GET && is("sec-fetch-site", "cross-site") && is("sec-fetch-mode", "navigate") {
        let here = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/portal");
        let refresh = format!("0;url={here}");
        let page = html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta http-equiv="refresh" content=(refresh);
                    title { "Opening your portal" }
                    link rel="stylesheet" href=(super::layout::STYLESHEET);
                }
                body { main id="main" { h1 { "Opening your portal…" } p { a href=(here) { "Continue" } } } }
            }
        };
        return page.into_response();
    }
    see_other("/portal/expired")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; tally_portal=ps_abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("ps_abc"));
        assert_eq!(cookie(&h, "tally"), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "x=1".parse().unwrap());
        h.append(header::COOKIE, "tally_portal=ps_def".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("ps_def"));
    }

    #[test]
    fn the_cookie_has_every_attribute() {
        let c = set_cookie("ps_1", 43200, true);
        let c = c.to_str().unwrap();
        for part in ["tally_portal=ps_1", "Path=/portal", "HttpOnly", "SameSite=Strict", "Max-Age=43200", "Secure"] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(!set_cookie("ps_1", 1, false).to_str().unwrap().contains("Secure"));
    }
}

//! Security headers on every portal response (pages, redirects, errors).
//!
//! No script runs (`script-src 'none'`), styles come only from the portal's own
//! stylesheet, nothing loads from another host, no other site may frame a page, the
//! enter URL's token never leaks through `Referer`, and no page is cached (they hold
//! balances and, once, secrets).

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::Response;

pub const CSP: &str = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; \
                       object-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The receipt is the API's printable page, with its style inline: allowed there only.
pub const RECEIPT_CSP: &str = "default-src 'self'; script-src 'none'; style-src 'unsafe-inline'; \
                               object-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub async fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CACHE_CONTROL, "no-store");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    r
}

//! Rate limits on authenticated requests (`crate::rate_limit` holds the buckets).
//!
//! The credential extractors (`Principal`, and the portal's session) call [`admit`] once
//! they know who is calling, so a refused request is a 429 before its handler runs: nothing
//! is read past the credential and nothing is done. [`headers`], around every route, puts
//! the `RateLimit-*` headers (and `Retry-After` on a refusal) on the response, whatever
//! the response is: the extractor leaves its decision in a slot the request carries.

use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::AppError;
use crate::meters;
use crate::rate_limit::{Bucket, RateLimits, Verdict};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// This request's decision, once a credential extractor has made it.
#[derive(Clone, Default)]
struct Slot(Arc<OnceLock<Verdict>>);

/// Carries a [`Slot`] through a request that has a credential, and writes its decision
/// onto the response.
pub async fn headers(mut req: Request, next: Next) -> Response {
    let has_credential =
        req.headers().contains_key(header::AUTHORIZATION) || req.headers().contains_key(header::COOKIE);
    if !has_credential {
        return next.run(req).await;
    }
    let slot = Slot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    if let Some(v) = slot.0.get() {
        write(resp.headers_mut(), v);
    }
    resp
}

fn write(h: &mut HeaderMap, v: &Verdict) {
    h.insert(LIMIT, HeaderValue::from(v.limit));
    h.insert(REMAINING, HeaderValue::from(v.remaining));
    h.insert(RESET, HeaderValue::from(v.reset_secs));
    if let Some(s) = v.retry_after_secs {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
}

/// Takes this request's token from `bucket`: a 429 `rate_limited` when there is none.
/// A request is counted once, however many extractors ask.
pub fn admit(parts: &Parts, limits: &RateLimits, bucket: Bucket) -> Result<(), AppError> {
    let slot = parts.extensions.get::<Slot>();
    let verdict = match slot.and_then(|s| s.0.get()) {
        Some(decided) => *decided,
        None => {
            let Some(v) = limits.check(bucket) else { return Ok(()) };
            if let Some(s) = slot {
                let _ = s.0.set(v);
            }
            if !v.allowed() {
                meters::rate_limited(bucket.class());
            }
            v
        }
    };
    match verdict.retry_after_secs {
        None => Ok(()),
        Some(retry_after_secs) => Err(AppError::RateLimited { retry_after_secs }),
    }
}

//! Credentials as request extractors: the bearer token resolved to a [`Principal`]
//! (`crate::auth`), and the [`Admin`] and [`Backend`] guards that answer 403 before
//! anything else in the request is read.
//!
//! Once the credential is known, its rate limit applies (`super::throttle`): over the
//! limit, a 429 before the handler runs. The admin token is never limited.
//!
//! A suspended tenant's own API keys can read but change nothing: every request with a
//! write method by such a key is a 403 here, before any handler runs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{verify, Principal};
use crate::error::AppError;
use crate::idempotency::{IdempotencyKey, Side};
use crate::rate_limit::Bucket;
use crate::state::AppState;

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(AppError::Unauthorized)?;
        let v = verify(&state.pool, &state.admin_token_hash, &state.auth_cache, token).await?;
        if let Some(bucket) = bucket(&v.principal) {
            super::throttle::admit(parts, &state.rate_limits, bucket)?;
        }
        if v.tenant_suspended && is_write(parts) {
            return Err(AppError::Forbidden(
                "this tenant is suspended: its API keys can read but change nothing".into(),
            ));
        }
        Ok(v.principal)
    }
}

/// The rate-limit bucket a credential draws on: none for the admin token.
fn bucket(p: &Principal) -> Option<Bucket> {
    match *p {
        Principal::Admin => None,
        Principal::Service { id } => Some(Bucket::Service(id)),
        Principal::Tenant { key_id, .. } => Some(Bucket::ApiKey(key_id)),
    }
}

/// Requests that change nothing whatever their method (a suspended tenant's keys may send them).
const READ_ONLY_POSTS: &[&str] = &["/v1/estimates"];

/// Whether a request may change something: any method but GET, HEAD and OPTIONS.
fn is_write(parts: &Parts) -> bool {
    use axum::http::Method;
    !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !READ_ONLY_POSTS.contains(&parts.uri.path())
}

/// The admin token. As an extractor placed before the path and body, it answers 403
/// before anything else in the request is read.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        p.require_admin()?;
        Ok(Admin(p))
    }
}

/// A generation backend: a service token or the admin token, checked first like [`Admin`].
pub struct Backend(pub Principal);

impl FromRequestParts<AppState> for Backend {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        p.require_backend()?;
        Ok(Backend(p))
    }
}

/// The `Idempotency-Key` header with the side the credential's keys live on.
pub fn keyed(p: &Principal, headers: &axum::http::HeaderMap) -> Result<(Side, IdempotencyKey), AppError> {
    Ok((p.side(), IdempotencyKey::from_headers(headers)?))
}

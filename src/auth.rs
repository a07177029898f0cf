//! Credentials: who is calling, and what they may reach.
//!
//! Three kinds (see the contract): the admin token, service tokens, tenant API keys.
//! Secrets are random, shown once, and stored only as SHA-256 hashes (they carry 192
//! bits of entropy, so a slow password hash would add cost and no safety).
//!
//! Lookups are cached per replica for `TALLY_AUTH_CACHE_TTL_MS` (positive answers only):
//! a key disabled or deleted through this replica is dropped from its cache at once;
//! other replicas stop accepting it within the TTL.
//!
//! The request extractors (`Principal`, `Admin`, `Backend`) live in `http::credentials`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::idempotency::Side;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Service { id: Uuid },
    Tenant { tenant_id: Uuid, key_id: Uuid },
}

impl Principal {
    pub fn require_admin(&self) -> AppResult<()> {
        match self {
            Principal::Admin => Ok(()),
            _ => Err(AppError::Forbidden("this route needs the admin token".into())),
        }
    }

    /// Routes for generation backends: admin or a service token.
    pub fn require_backend(&self) -> AppResult<()> {
        match self {
            Principal::Admin | Principal::Service { .. } => Ok(()),
            Principal::Tenant { .. } => Err(AppError::Forbidden("this route needs a service token".into())),
        }
    }

    /// A tenant-scoped resource. A tenant key reaches only its own tenant: anything else is
    /// a 404, indistinguishable from a resource that does not exist.
    pub fn scope(&self, tenant_id: Uuid, service_ok: bool) -> AppResult<()> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Service { .. } if service_ok => Ok(()),
            Principal::Service { .. } => Err(AppError::Forbidden("service tokens cannot use this route".into())),
            Principal::Tenant { tenant_id: own, .. } if *own == tenant_id => Ok(()),
            Principal::Tenant { .. } => Err(AppError::NotFound),
        }
    }

    /// Whose idempotency keys this credential uses: a tenant's own API keys have their own,
    /// apart from the platform's (service and admin tokens).
    pub fn side(&self) -> Side {
        match self {
            Principal::Tenant { .. } => Side::Tenant,
            Principal::Admin | Principal::Service { .. } => Side::Platform,
        }
    }

    /// Who acted, as recorded on ledger transactions.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Service { id } => format!("service_token:{id}"),
            Principal::Tenant { key_id, .. } => format!("api_key:{key_id}"),
        }
    }
}

pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A new secret: `<kind>_` followed by 48 hex characters (192 random bits).
pub fn generate_token(kind: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{kind}_{}", hex::encode(bytes))
}

/// The visible part of a key, enough to recognise it in a list.
pub fn visible_prefix(token: &str) -> String {
    token.chars().take(12).collect()
}

#[derive(Clone, Default)]
pub struct AuthCache {
    ttl: Duration,
    map: Arc<RwLock<HashMap<TokenHash, (Principal, Instant)>>>,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> AuthCache {
        AuthCache { ttl, map: Default::default() }
    }

    fn get(&self, h: &TokenHash) -> Option<Principal> {
        // A panic elsewhere while holding the lock leaves a usable map: keep serving.
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(h).filter(|(_, at)| at.elapsed() < self.ttl).map(|(p, _)| *p)
    }

    fn put(&self, h: TokenHash, p: Principal) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        map.insert(h, (p, Instant::now()));
    }

    /// Forgets an API key at once (it was disabled or deleted here).
    pub fn forget_key(&self, key_id: Uuid) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (p, _)| !matches!(p, Principal::Tenant { key_id: k, .. } if *k == key_id));
    }
}

/// Resolves a bearer token. The admin token is compared in constant time via its hash.
pub async fn authenticate(pool: &PgPool, admin: &TokenHash, cache: &AuthCache, token: &str) -> AppResult<Principal> {
    let h = hash_token(token);
    if constant_time_eq(&h, admin) {
        return Ok(Principal::Admin);
    }
    if let Some(p) = cache.get(&h) {
        return Ok(p);
    }
    let found = if token.starts_with("st_") {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM service_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(&h[..])
            .fetch_optional(pool)
            .await?
            .map(|id| Principal::Service { id })
    } else {
        // A cache miss is also when last_used_at moves: at most once per TTL per key.
        sqlx::query_as::<_, (Uuid, Uuid)>(
            "UPDATE api_keys SET last_used_at = now() \
             WHERE key_hash = $1 AND deleted_at IS NULL AND status = 'enabled' RETURNING tenant_id, id",
        )
        .bind(&h[..])
        .fetch_optional(pool)
        .await?
        .map(|(tenant_id, key_id)| Principal::Tenant { tenant_id, key_id })
    };
    let p = found.ok_or(AppError::Unauthorized)?;
    cache.put(h, p);
    Ok(p)
}

fn constant_time_eq(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_hides_other_tenants() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let key = Principal::Tenant { tenant_id: a, key_id: Uuid::now_v7() };
        assert!(key.scope(a, false).is_ok());
        assert!(matches!(key.scope(b, true), Err(AppError::NotFound)));
        assert!(matches!(key.require_admin(), Err(AppError::Forbidden(_))));
        let svc = Principal::Service { id: Uuid::now_v7() };
        assert!(svc.scope(b, true).is_ok());
        assert!(matches!(svc.scope(b, false), Err(AppError::Forbidden(_))));
    }

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (t1, t2) = (generate_token("tk"), generate_token("tk"));
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 3 + 48);
        assert_eq!(hash_token(&t1), hash_token(&t1));
        assert!(constant_time_eq(&hash_token(&t1), &hash_token(&t1)));
        assert!(!constant_time_eq(&hash_token(&t1), &hash_token(&t2)));
    }
}

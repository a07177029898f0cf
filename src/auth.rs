//! Credentials: who is calling, and what they may reach.
//!
//! Three kinds (see the contract): the admin token, service tokens, tenant API keys.
//! Secrets are random, shown once, and stored only as SHA-256 hashes (they carry 192
//! bits of entropy, so a slow password hash would add cost and no safety).
//!
//! Lookups are cached per replica for `TALLY_AUTH_CACHE_TTL_MS` (positive answers only):
//! a key disabled or deleted, a service token revoked, or a tenant suspended or reactivated
//! through this replica is dropped from its cache at once (and a lookup that was already
//! under way when that happened is not cached); other replicas see the change within the TTL.
//!
//! A suspended tenant's own API keys can read but change nothing: every request with a
//! write method (POST, PUT, PATCH, DELETE) by such a key is a 403, except the read-only
//! `POST /v1/estimates`. The tenant's status is read with the key and cached with it.
//!
//! The request extractors (`Principal`, `Admin`, `Backend`), and the suspended-tenant
//! write check, live in `http::credentials`.

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

/// A verified credential, and for a tenant key whether its tenant is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    pub tenant_suspended: bool,
}

#[derive(Clone, Default)]
pub struct AuthCache {
    ttl: Duration,
    inner: Arc<RwLock<CacheState>>,
}

#[derive(Default)]
struct CacheState {
    map: HashMap<TokenHash, (Verified, Instant)>,
    /// When a key, token or tenant was last forgotten: a lookup that started before then
    /// may have read the old state, so its answer is not cached.
    forgotten: HashMap<Uuid, Instant>,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> AuthCache {
        AuthCache { ttl, inner: Default::default() }
    }

    fn get(&self, h: &TokenHash) -> Option<Verified> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.map.get(h).filter(|(_, at)| at.elapsed() < self.ttl).map(|(v, _)| *v)
    }

    /// Caches `v`, read by a lookup that started at `started`.
    fn put(&self, h: TokenHash, v: Verified, started: Instant) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let ids: &[Uuid] = match &v.principal {
            Principal::Admin => &[],
            Principal::Service { id } => &[*id],
            Principal::Tenant { tenant_id, key_id } => &[*tenant_id, *key_id],
        };
        if ids.iter().any(|id| state.forgotten.get(id).is_some_and(|at| *at >= started)) {
            return;
        }
        if state.map.len() > 100_000 {
            let ttl = self.ttl;
            state.map.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        state.map.insert(h, (v, Instant::now()));
    }

    /// Drops every entry `matches` selects, and remembers `id` as changed now.
    fn forget(&self, id: Uuid, matches: impl Fn(&Principal) -> bool) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        state.map.retain(|_, (v, _)| !matches(&v.principal));
        let ttl = self.ttl;
        // Lookups take far less than a TTL: older tombstones can go.
        state.forgotten.retain(|_, at| at.elapsed() < ttl.max(Duration::from_secs(60)));
        state.forgotten.insert(id, Instant::now());
    }

    /// Forgets an API key at once (it was disabled or deleted here).
    pub fn forget_key(&self, key_id: Uuid) {
        self.forget(key_id, |p| matches!(p, Principal::Tenant { key_id: k, .. } if *k == key_id));
    }

    /// Forgets a service token at once (it was revoked here).
    pub fn forget_service_token(&self, token_id: Uuid) {
        self.forget(token_id, |p| matches!(p, Principal::Service { id } if *id == token_id));
    }

    /// Forgets every key of a tenant at once (its status changed here).
    pub fn forget_tenant(&self, tenant_id: Uuid) {
        self.forget(tenant_id, |p| matches!(p, Principal::Tenant { tenant_id: t, .. } if *t == tenant_id));
    }
}

/// Resolves a bearer token. The admin token is compared in constant time via its hash.
pub async fn authenticate(pool: &PgPool, admin: &TokenHash, cache: &AuthCache, token: &str) -> AppResult<Principal> {
    verify(pool, admin, cache, token).await.map(|v| v.principal)
}

/// [`authenticate`], with the tenant's status for a tenant key.
pub async fn verify(pool: &PgPool, admin: &TokenHash, cache: &AuthCache, token: &str) -> AppResult<Verified> {
    let h = hash_token(token);
    if constant_time_eq(&h, admin) {
        return Ok(Verified { principal: Principal::Admin, tenant_suspended: false });
    }
    if let Some(v) = cache.get(&h) {
        return Ok(v);
    }
    let started = Instant::now();
    let found = if token.starts_with("st_") {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM service_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(&h[..])
            .fetch_optional(pool)
            .await?
            .map(|id| Verified { principal: Principal::Service { id }, tenant_suspended: false })
    } else {
        // A cache miss is also when last_used_at moves: at most once per TTL per key.
        sqlx::query_as::<_, (Uuid, Uuid, bool)>(
            "UPDATE api_keys k SET last_used_at = now() FROM tenants t \
             WHERE k.key_hash = $1 AND k.deleted_at IS NULL AND k.status = 'enabled' AND t.id = k.tenant_id \
             RETURNING k.tenant_id, k.id, t.status = 'suspended'",
        )
        .bind(&h[..])
        .fetch_optional(pool)
        .await?
        .map(|(tenant_id, key_id, suspended)| Verified {
            principal: Principal::Tenant { tenant_id, key_id },
            tenant_suspended: suspended,
        })
    };
    let v = found.ok_or(AppError::Unauthorized)?;
    cache.put(h, v, started);
    Ok(v)
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
    fn a_lookup_that_raced_a_change_is_not_cached() {
        let cache = AuthCache::new(Duration::from_secs(60));
        let (tenant_id, key_id) = (Uuid::now_v7(), Uuid::now_v7());
        let v = Verified { principal: Principal::Tenant { tenant_id, key_id }, tenant_suspended: false };
        let h = hash_token("tk_x");
        let started = Instant::now();
        cache.forget_tenant(tenant_id); // suspended while the lookup was reading
        cache.put(h, v, started);
        assert_eq!(cache.get(&h), None, "the old status is not cached");
        cache.put(h, v, Instant::now());
        assert_eq!(cache.get(&h), Some(v), "a lookup after the change is");
        cache.forget_key(key_id);
        assert_eq!(cache.get(&h), None);
        let svc = Verified { principal: Principal::Service { id: Uuid::now_v7() }, tenant_suspended: false };
        cache.put(h, svc, Instant::now());
        cache.forget_service_token(Uuid::now_v7());
        assert_eq!(cache.get(&h), Some(svc), "another token's revocation leaves it");
        let Principal::Service { id } = svc.principal else { unreachable!() };
        cache.forget_service_token(id);
        assert_eq!(cache.get(&h), None);
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

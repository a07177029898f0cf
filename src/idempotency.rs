//! Idempotency keys: a retry returns the first response; a reused key with another body
//! is refused; a key whose first request is still running gets 409.
//!
//! Keys are scoped per tenant and per [`Side`]: a tenant's own API keys use one set, the
//! platform (service and admin tokens) another, so a tenant can never occupy a key its
//! platform's backends will use.
//!
//! Invariants: the key, its request fingerprint and its response are written in the same
//! database transaction as the effect (so neither exists without the other), and a
//! transaction-scoped advisory lock on (tenant, side, key) marks a request in flight across
//! every replica. Only effects are stored: the posting frame stores 2xx and recorded
//! failures, and rolls back on any other error, so such a retry runs again.

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::Rows;
use crate::error::{AppError, AppResult};
use crate::vocab::text_enum;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

text_enum! {
    /// Which credentials sent a key: the tenant's own API keys, or the platform's service
    /// and admin tokens. Each side has its own keys.
    pub enum Side { Tenant = "tenant", Platform = "platform" }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// The header, required: 1–255 printable ASCII characters.
    pub fn from_headers(h: &HeaderMap) -> AppResult<IdempotencyKey> {
        let v = h.get(HEADER).ok_or_else(|| AppError::invalid("the Idempotency-Key header is required"))?;
        let s = v.to_str().map_err(|_| AppError::invalid("Idempotency-Key must be printable ASCII"))?;
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(AppError::invalid("Idempotency-Key must be 1-255 printable ASCII characters"));
        }
        Ok(IdempotencyKey(s.to_string()))
    }

    /// The advisory-lock id for this key of this tenant's side.
    pub fn lock_id(&self, tenant: Uuid, side: Side) -> i64 {
        let d = Sha256::new()
            .chain_update(tenant.as_bytes())
            .chain_update(side.as_str().as_bytes())
            .chain_update([0])
            .chain_update(self.0.as_bytes())
            .finalize();
        i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

pub type Fingerprint = [u8; 32];

/// What makes two requests "the same": the operation and its parsed body (so `"5.0"` and
/// `"5.00"`, or reordered fields, are the same request).
pub fn fingerprint(operation: &str, body: &impl Serialize) -> Fingerprint {
    let json = serde_json::to_vec(body).expect("request bodies serialize");
    Sha256::new().chain_update(operation.as_bytes()).chain_update([0]).chain_update(json).finalize().into()
}

/// A response to send, and whether it is a replay of a stored one.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub replayed: bool,
}

/// One key to claim for one request: whose, which side, and the request it protects.
#[derive(Debug, Clone)]
pub struct Claim {
    pub tenant: Uuid,
    pub side: Side,
    pub key: IdempotencyKey,
    pub fp: Fingerprint,
}

/// What claiming a key found: `Ok(None)` to go on, `Ok(Some(stored))` to replay, or a
/// refusal (in flight, reused with another body).
pub type Claimed = AppResult<Option<Stored>>;

pub fn replay_or_refuse(found: Option<(Vec<u8>, i16, Vec<u8>)>, fp: &Fingerprint) -> Claimed {
    match found {
        None => Ok(None),
        Some((stored_fp, _, _)) if stored_fp != fp[..] => Err(AppError::IdempotencyKeyReused),
        Some((_, status, body)) => Ok(Some(Stored {
            status: StatusCode::from_u16(status as u16).map_err(AppError::internal)?,
            body,
            replayed: true,
        })),
    }
}

/// Claims `claims` in the caller's transaction, one answer each. A key that appears twice
/// is in flight for its second occurrence.
///
/// Two statements, on purpose: the stored keys are read only after the advisory locks are
/// held, with a snapshot taken after that. A request that held the lock released it only
/// once its commit was visible, so its key cannot be missed (one statement would read
/// with a snapshot taken before the lock was won, and run the effect a second time).
pub async fn claim_all(conn: &mut PgConnection, claims: &[&Claim]) -> AppResult<Vec<Claimed>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let locks: Vec<i64> = claims.iter().map(|c| c.key.lock_id(c.tenant, c.side)).collect();
    let got: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(u.lock) FROM UNNEST($1::int8[]) WITH ORDINALITY AS u(lock, i) ORDER BY u.i",
    )
    .bind(&locks)
    .fetch_all(&mut *conn)
    .await?;
    let won: Vec<&Claim> = claims.iter().zip(&got).filter(|(_, g)| **g).map(|(c, _)| *c).collect();
    type Row = (String, Uuid, Side, Vec<u8>, i16, Vec<u8>);
    let stored: Vec<Row> = if won.is_empty() {
        Vec::new()
    } else {
        // The primary key is (key, tenant_id, side): the keys lead the index condition, so
        // each is an exact lookup however many keys the tenant has (see migration 0004).
        // A pair the ANYs admit but nobody asked for is dropped below.
        let keys: Vec<&str> = won.iter().map(|c| c.key.0.as_str()).collect();
        let tenants: Vec<Uuid> = won.iter().map(|c| c.tenant).collect();
        let sides: Vec<Side> = won.iter().map(|c| c.side).collect();
        sqlx::query_as(
            "SELECT key, tenant_id, side, fingerprint, status, body FROM idempotency_keys \
             WHERE key = ANY($1) AND tenant_id = ANY($2) AND side = ANY($3)",
        )
        .bind(&keys)
        .bind(&tenants)
        .bind(&sides)
        .fetch_all(conn)
        .await?
    };
    let mut stored: HashMap<(String, Uuid, Side), (Vec<u8>, i16, Vec<u8>)> =
        stored.into_iter().map(|(k, t, s, f, st, b)| ((k, t, s), (f, st, b))).collect();
    let mut seen = HashSet::new();
    Ok(claims
        .iter()
        .zip(got)
        .map(|(c, got)| {
            if !got || !seen.insert((c.key.0.as_str(), c.tenant, c.side)) {
                return Err(AppError::RequestInProgress);
            }
            replay_or_refuse(stored.remove(&(c.key.0.clone(), c.tenant, c.side)), &c.fp)
        })
        .collect())
}

/// Reads what is stored under a key (no lock), for a caller that already holds its claim.
pub async fn stored(conn: &mut PgConnection, c: &Claim) -> AppResult<Claimed> {
    let found: Option<(Vec<u8>, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = $1 AND tenant_id = $2 AND side = $3",
    )
    .bind(&c.key.0)
    .bind(c.tenant)
    .bind(c.side)
    .fetch_optional(conn)
    .await?;
    Ok(replay_or_refuse(found, &c.fp))
}

/// Records the responses of the effects just made, in the same transaction, in one round trip.
pub async fn store_all(conn: &mut PgConnection, done: &[(&Claim, &Stored)]) -> AppResult<()> {
    rows(done).insert(conn).await?;
    Ok(())
}

/// The rows that record `done`, for [`store_all`] or for a statement that carries them.
pub fn rows<'a>(done: &[(&'a Claim, &'a Stored)]) -> Rows<'a> {
    Rows::new("INSERT INTO idempotency_keys (key, tenant_id, side, fingerprint, status, body)", done.len())
        .column("text", done.iter().map(|(c, _)| c.key.0.as_str()).collect())
        .column("uuid", done.iter().map(|(c, _)| c.tenant).collect())
        .column("text", done.iter().map(|(c, _)| c.side).collect())
        .column("bytea", done.iter().map(|(c, _)| &c.fp[..]).collect())
        .column("int2", done.iter().map(|(_, s)| s.status.as_u16() as i16).collect())
        .column("bytea", done.iter().map(|(_, s)| s.body.as_slice()).collect())
}

/// A response to store (and answer), serialized.
pub fn json(status: StatusCode, body: &impl Serialize) -> AppResult<Stored> {
    Ok(Stored { status, body: serde_json::to_vec(body).map_err(AppError::internal)?, replayed: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let mut h = HeaderMap::new();
        assert!(IdempotencyKey::from_headers(&h).is_err());
        h.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(IdempotencyKey::from_headers(&h).unwrap().0, "abc-123");
        h.insert(HEADER, "x".repeat(256).parse().unwrap());
        assert!(IdempotencyKey::from_headers(&h).is_err());
        h.insert(HEADER, "tab\there".parse().unwrap());
        assert!(IdempotencyKey::from_headers(&h).is_err());
    }

    #[test]
    fn fingerprints_follow_the_parsed_body() {
        let a: crate::money::Money = "5.0".parse().unwrap();
        let b: crate::money::Money = "5.00".parse().unwrap();
        assert_eq!(fingerprint("op", &a), fingerprint("op", &b));
        assert_ne!(fingerprint("op", &a), fingerprint("other", &a));
        let t = Uuid::now_v7();
        let k = IdempotencyKey("k".into());
        assert_eq!(k.lock_id(t, Side::Tenant), k.lock_id(t, Side::Tenant));
        assert_ne!(k.lock_id(t, Side::Tenant), k.lock_id(Uuid::now_v7(), Side::Tenant));
        assert_ne!(k.lock_id(t, Side::Tenant), k.lock_id(t, Side::Platform), "each side its own lock");
    }
}

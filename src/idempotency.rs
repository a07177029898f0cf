//! Idempotency keys: a retry returns the first response; a reused key with another body
//! is refused; a key whose first request is still running gets 409.
//!
//! Invariants: the key, its request fingerprint and its response are written in the same
//! database transaction as the effect (so neither exists without the other), and a
//! transaction-scoped advisory lock on (tenant, key) marks a request in flight across
//! every replica. Only effects are stored: callers store 2xx and recorded failures, and
//! roll back on any other error, so such a retry runs again.

use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

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

    /// The advisory-lock id for this key of this tenant.
    pub fn lock_id(&self, tenant: Uuid) -> i64 {
        let d = Sha256::new().chain_update(tenant.as_bytes()).chain_update(self.0.as_bytes()).finalize();
        i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
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

/// Starts the protected operation inside `conn`'s transaction: `Ok(None)` to go on,
/// `Ok(Some(stored))` to replay.
pub async fn begin(
    conn: &mut PgConnection,
    tenant: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
) -> AppResult<Option<Stored>> {
    begin_many(conn, tenant, &[(key, fp)]).await?.pop().expect("one key, one answer")
}

pub fn replay_or_refuse(found: Option<(Vec<u8>, i16, Vec<u8>)>, fp: &Fingerprint) -> AppResult<Option<Stored>> {
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

/// Records the response of the effect just made, in the same transaction.
pub async fn finish(
    conn: &mut PgConnection,
    tenant: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    status: StatusCode,
    body: Vec<u8>,
) -> AppResult<Stored> {
    sqlx::query("INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body) VALUES ($1, $2, $3, $4, $5)")
        .bind(tenant)
        .bind(&key.0)
        .bind(&fp[..])
        .bind(status.as_u16() as i16)
        .bind(&body)
        .execute(conn)
        .await?;
    Ok(Stored { status, body, replayed: false })
}

/// Serializes a response body and records it.
pub async fn finish_json(
    conn: &mut PgConnection,
    tenant: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    status: StatusCode,
    body: &impl Serialize,
) -> AppResult<Stored> {
    let bytes = serde_json::to_vec(body).map_err(AppError::internal)?;
    finish(conn, tenant, key, fp, status, bytes).await
}

/// [`begin`] for a batch. A key that appears twice in one batch is in flight for its
/// second occurrence.
///
/// Two statements, on purpose: the stored keys are read only after the advisory locks are
/// held, with a snapshot taken after that. A request that held the lock released it only
/// once its commit was visible, so its key cannot be missed (one statement would read
/// with a snapshot taken before the lock was won, and run the effect a second time).
pub async fn begin_many(
    conn: &mut PgConnection,
    tenant: Uuid,
    keys: &[(&IdempotencyKey, &Fingerprint)],
) -> AppResult<Vec<AppResult<Option<Stored>>>> {
    let locks: Vec<i64> = keys.iter().map(|(k, _)| k.lock_id(tenant)).collect();
    let got: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(u.lock) FROM UNNEST($1::int8[]) WITH ORDINALITY AS u(lock, i) ORDER BY u.i",
    )
    .bind(&locks)
    .fetch_all(&mut *conn)
    .await?;
    let names: Vec<&str> = keys.iter().zip(&got).filter(|(_, g)| **g).map(|((k, _), _)| k.0.as_str()).collect();
    type Row = (String, Vec<u8>, i16, Vec<u8>);
    let stored: Vec<Row> = if names.is_empty() {
        Vec::new()
    } else {
        // The primary key is (key, tenant_id): the keys are the index condition, so each is
        // an exact lookup however many keys the tenant has (see migration 0004).
        sqlx::query_as(
            "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = ANY($2) AND tenant_id = $1",
        )
        .bind(tenant)
        .bind(&names)
        .fetch_all(conn)
        .await?
    };
    let mut stored: std::collections::HashMap<String, (Vec<u8>, i16, Vec<u8>)> =
        stored.into_iter().map(|(k, f, s, b)| (k, (f, s, b))).collect();
    let mut seen = std::collections::HashSet::new();
    Ok(keys
        .iter()
        .zip(got)
        .map(|((k, fp), got)| {
            if !got || !seen.insert(k.0.as_str()) {
                return Err(AppError::RequestInProgress);
            }
            replay_or_refuse(stored.remove(&k.0), fp)
        })
        .collect())
}

/// [`finish`] for a batch, in one round trip.
pub async fn finish_many(
    conn: &mut PgConnection,
    tenant: Uuid,
    done: &[(&IdempotencyKey, &Fingerprint, &Stored)],
) -> AppResult<()> {
    if done.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = done.iter().map(|(k, _, _)| k.0.as_str()).collect();
    let fps: Vec<&[u8]> = done.iter().map(|(_, f, _)| &f[..]).collect();
    let statuses: Vec<i16> = done.iter().map(|(_, _, s)| s.status.as_u16() as i16).collect();
    let bodies: Vec<&[u8]> = done.iter().map(|(_, _, s)| s.body.as_slice()).collect();
    sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body) \
         SELECT $1, * FROM UNNEST($2::text[], $3::bytea[], $4::int2[], $5::bytea[])",
    )
    .bind(tenant)
    .bind(&keys)
    .bind(&fps)
    .bind(&statuses)
    .bind(&bodies)
    .execute(conn)
    .await?;
    Ok(())
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
        assert_eq!(k.lock_id(t), k.lock_id(t));
        assert_ne!(k.lock_id(t), k.lock_id(Uuid::now_v7()));
    }
}

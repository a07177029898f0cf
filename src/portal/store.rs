//! Portal links and sessions in the database.
//!
//! Invariants:
//! - tokens are random (192 bits), handed out once, and stored only as SHA-256 hashes;
//! - a link opens at most one session: the `UPDATE … WHERE used_at IS NULL AND
//!   expires_at > now` that marks it used is the only way in, and the session is inserted
//!   in the same transaction, so two browsers racing on one link get one session between
//!   them;
//! - a session belongs to exactly one tenant, fixed when it is opened; nothing a browser
//!   sends later can change which tenant it sees.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{generate_token, hash_token};
use crate::error::{AppError, AppResult};
use crate::ids::new_id;

/// A link just made: the token is in `token` and nowhere else.
#[derive(Debug)]
pub struct NewLink {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A session just opened from a link: `token` goes into the cookie.
#[derive(Debug)]
pub struct NewSession {
    pub token: String,
    pub tenant_id: Uuid,
}

/// A live session, as every portal request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_name: String,
    /// The tenant is suspended: the portal is read-only.
    pub suspended: bool,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn ttl(d: Duration) -> AppResult<chrono::Duration> {
    chrono::Duration::from_std(d).map_err(AppError::internal)
}

/// Creates a one-use link for `tenant` (404 when there is no such tenant).
pub async fn create_link(pool: &PgPool, tenant: Uuid, actor: &str, lifetime: Duration) -> AppResult<NewLink> {
    let token = generate_token("pl");
    let now = Utc::now();
    let expires_at = now + ttl(lifetime)?;
    let inserted = sqlx::query(
        "INSERT INTO portal_links (tenant_id, id, token_hash, actor, created_at, expires_at) \
         SELECT id, $2, $3, $4, $5, $6 FROM tenants WHERE id = $1",
    )
    .bind(tenant)
    .bind(new_id())
    .bind(&hash_token(&token)[..])
    .bind(actor)
    .bind(now)
    .bind(expires_at)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(NewLink { token, expires_at })
}

/// Opens a session with a link's token: `None` when the link is unknown, used or expired.
pub async fn redeem(pool: &PgPool, link_token: &str, lifetime: Duration) -> AppResult<Option<NewSession>> {
    if link_token.is_empty() || link_token.len() > 256 {
        return Ok(None);
    }
    let now = Utc::now();
    let link_hash = hash_token(link_token);
    let expires_at = now + ttl(lifetime)?;
    // One transaction: marking the link used and opening the session stand or fall together,
    // so two browsers racing on one link get one session between them.
    crate::frame::transaction(pool, move |tx| {
        Box::pin(async move {
            let link: Option<(Uuid, Uuid)> = sqlx::query_as(
                "UPDATE portal_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                 RETURNING tenant_id, id",
            )
            .bind(&link_hash[..])
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((tenant_id, link_id)) = link else { return Ok(None) };
            let token = generate_token("ps");
            sqlx::query(
                "INSERT INTO portal_sessions (tenant_id, id, link_id, token_hash, csrf_token, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(tenant_id)
            .bind(new_id())
            .bind(link_id)
            .bind(&hash_token(&token)[..])
            .bind(csrf_token())
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            Ok(Some(NewSession { token, tenant_id }))
        })
    })
    .await
}

/// The live session a cookie names, if any.
pub async fn session(pool: &PgPool, session_token: &str) -> AppResult<Option<Session>> {
    if session_token.is_empty() || session_token.len() > 256 {
        return Ok(None);
    }
    let row: Option<(Uuid, Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.id, s.tenant_id, t.name, t.status, s.csrf_token, s.expires_at \
         FROM portal_sessions s JOIN tenants t ON t.id = s.tenant_id \
         WHERE s.token_hash = $1 AND s.expires_at > now() AND s.ended_at IS NULL",
    )
    .bind(&hash_token(session_token)[..])
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, tenant_id, tenant_name, status, csrf_token, expires_at)| Session {
        id,
        tenant_id,
        tenant_name,
        suspended: status != "active",
        csrf_token,
        expires_at,
    }))
}

/// Ends a session (sign out). The row stays, marked ended.
pub async fn end(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<()> {
    sqlx::query("UPDATE portal_sessions SET ended_at = now() WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL")
        .bind(tenant)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// 256 random bits, hex.
fn csrf_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares two secrets in time that depends only on their (hashed) length, not on where
/// they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (hash_token(a), hash_token(b));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content() {
        let t = csrf_token();
        assert_eq!(t.len(), 64);
        assert!(same_secret(&t, &t.clone()));
        assert!(!same_secret(&t, &csrf_token()));
        assert!(!same_secret(&t, ""));
        assert!(!same_secret(&t, &t[..63]));
    }
}

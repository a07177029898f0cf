//! Webhook endpoints: registration (`PUT …/webhook`), Standard Webhooks signing, and the
//! rules on where the service may send requests.
//!
//! Invariants:
//! - the signing secret (`whsec_` + base64 of 24 random bytes) is shown once, when set;
//! - unless `TALLY_ALLOW_PRIVATE_WEBHOOKS` is on, no webhook request reaches a private,
//!   loopback, link-local or otherwise non-public address: checked when the URL is set, and
//!   again at delivery by the HTTP client's resolver (a name may resolve elsewhere later),
//!   with redirects and proxies off.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use super::events::EventType;
use crate::error::{AppError, AppResult};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// An `https://` (or `http://`) URL on a public address.
    pub url: String,
    /// Event types to send; omitted: all of them.
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…`: shown this once. Verify deliveries with it (Standard Webhooks).
    pub secret: String,
}

pub async fn put(pool: &PgPool, tenant: Uuid, req: WebhookRequest, allow_private: bool) -> AppResult<WebhookView> {
    let url = check_url(&req.url, allow_private).await?;
    let events = match &req.events {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(AppError::invalid("events must name at least one event type (omit it for all)"))
        }
        Some(list) => {
            let mut types = Vec::with_capacity(list.len());
            for name in list {
                let t = EventType::parse(name)
                    .ok_or_else(|| AppError::invalid(format!("events: unknown event type {name:?}")))?;
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            Some(types.into_iter().map(|t| t.as_str().to_string()).collect::<Vec<_>>())
        }
    };
    let secret = new_secret();
    let r = sqlx::query(
        "INSERT INTO webhook_endpoints (tenant_id, url, events, secret, updated_at) SELECT id, $2, $3, $4, $5 FROM tenants WHERE id = $1 \
         ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url, events = EXCLUDED.events, secret = EXCLUDED.secret, \
           updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant)
    .bind(url.as_str())
    .bind(&events)
    .bind(&secret)
    .bind(Utc::now())
    .execute(pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    let events = events.unwrap_or_else(|| EventType::ALL.iter().map(|t| t.as_str().to_string()).collect());
    Ok(WebhookView { url: url.to_string(), events, secret })
}

/// The outbox: deliveries pending (all replicas), and how long the oldest has waited.
pub async fn backlog(pool: &PgPool) -> AppResult<(i64, Duration)> {
    // Both from the partial index on pending rows (`webhook_deliveries_due`'s predicate).
    let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8          FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    Ok((pending, Duration::from_secs_f64(oldest.unwrap_or(0.0).max(0.0))))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", B64.encode(bytes))
}

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
/// keyed by the base64-decoded part of the secret after `whsec_`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key =
        B64.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).map_err(|e| format!("webhook secret: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// Parses and checks a webhook URL: http(s), a host, no credentials, and (unless allowed)
/// only public addresses.
pub async fn check_url(raw: &str, allow_private: bool) -> AppResult<url::Url> {
    if raw.len() > 2048 {
        return Err(AppError::invalid("url: at most 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| AppError::invalid(format!("url: {e}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(AppError::invalid("url: must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::invalid("url: credentials in the URL are not allowed"));
    }
    let host = url.host().ok_or_else(|| AppError::invalid("url: a host is required"))?;
    if allow_private {
        return Ok(url);
    }
    let refuse = || AppError::invalid("url: private, loopback and link-local addresses are not allowed");
    let port = url.port_or_known_default().unwrap_or(443);
    match host {
        url::Host::Ipv4(ip) if !is_public(IpAddr::V4(ip)) => return Err(refuse()),
        url::Host::Ipv6(ip) if !is_public(IpAddr::V6(ip)) => return Err(refuse()),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(refuse());
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|_| AppError::invalid(format!("url: the host {name} does not resolve")))?
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(refuse());
            }
        }
        _ => {}
    }
    Ok(url)
}

/// True for addresses on the public internet: not private, loopback, link-local,
/// shared (CGNAT), unspecified, broadcast, multicast, documentation or benchmarking ranges.
/// IPv6 forms that carry an IPv4 address are judged by that address where it sits at a fixed
/// place (IPv4-mapped `::ffff:a.b.c.d`, 6to4 `2002:AABB:CCDD::/48`, NAT64 well-known prefix
/// `64:ff9b::a.b.c.d`), and refused outright where it does not or the form is deprecated
/// (IPv4-compatible `::a.b.c.d`, local-use NAT64 `64:ff9b:1::/48`, Teredo `2001::/32`).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Embedded::V4(v4) => is_public_v4(v4),
            Embedded::Refused => false,
            Embedded::None => is_public_v6(v6),
        },
    }
}

enum Embedded {
    /// The IPv4 address the packet would reach.
    V4(Ipv4Addr),
    /// A translation form with no fixed place for it, or a deprecated one.
    Refused,
    None,
}

fn embedded_v4(ip: Ipv6Addr) -> Embedded {
    let s = ip.segments();
    let low32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Embedded::V4(v4);
    }
    match s {
        // `::` and `::1` are judged as IPv6 (unspecified, loopback: both refused).
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => Embedded::None,
        // IPv4-compatible (deprecated by RFC 4291): no legitimate destination.
        [0, 0, 0, 0, 0, 0, _, _] => Embedded::Refused,
        // 6to4 (RFC 3056): the IPv4 address of the site follows the prefix.
        [0x2002, hi, lo, ..] => Embedded::V4(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the IPv4 address is the last 32 bits.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Embedded::V4(low32),
        // The rest of 64:ff9b::/32, including local-use NAT64 64:ff9b:1::/48 (RFC 8215), whose
        // translators may embed any IPv4 address at a place that depends on their prefix length.
        [0x64, 0xff9b, ..] => Embedded::Refused,
        // Teredo (RFC 4380) tunnels to an obfuscated IPv4 client address.
        [0x2001, 0, ..] => Embedded::Refused,
        _ => Embedded::None,
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// The HTTP client webhooks are sent with: no redirects, no proxy, and a resolver that
/// refuses non-public addresses unless `allow_private`.
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("tally-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PublicOnly { allow_private }))
        .build()
        .map_err(|e| format!("building the webhook HTTP client: {e}"))
}

struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a delivery may go to this URL now (IP literals bypass the resolver).
pub fn literal_host_allowed(url: &url::Url, allow_private: bool) -> bool {
    allow_private
        || match url.host() {
            Some(url::Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d != "localhost" && !d.ends_with(".localhost")
            }
            None => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The vector published with the Standard Webhooks reference libraries.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig.unwrap(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let s = new_secret();
        assert!(s.starts_with("whsec_") && B64.decode(&s[6..]).unwrap().len() == 24);
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            // IPv4-compatible: deprecated, refused whatever it embeds.
            "::127.0.0.1",
            "::10.0.0.1",
            "::169.254.169.254",
            "::8.8.8.8",
            // 6to4 with a private or loopback IPv4 address inside.
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::",
            // NAT64 well-known prefix with a private address; local-use NAT64, all of it.
            "64:ff9b::127.0.0.1",
            "64:ff9b::192.168.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::8.8.8.8",
            "64:ff9b:1:ffff::1",
            "64:ff9b:2::1",
            // Teredo.
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} must be refused");
        }
        for public in
            ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::8.8.8.8"]
        {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[tokio::test]
    async fn urls_are_checked() {
        for bad in [
            "ftp://example.com/x",
            "not a url",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://[::1]/x",
            "https://user:pw@8.8.8.8/x",
            "http://10.0.0.1/",
            "http://[::127.0.0.1]/x",
            "http://[2002:7f00:1::1]/x",
            "http://[64:ff9b::10.0.0.1]/x",
            "http://[64:ff9b:1::1]/x",
        ] {
            assert!(check_url(bad, false).await.is_err(), "{bad} must be refused");
        }
        assert!(check_url("https://8.8.8.8/hook", false).await.is_ok());
        assert!(check_url("http://127.0.0.1:9/x", true).await.is_ok());
    }
}

//! Stripe's HTTP API as Stripe documents it, and nothing more: form-encoded bodies,
//! `Authorization: Bearer sk_…`, a pinned `Stripe-Version`, an `Idempotency-Key` on every
//! POST, and each answer classified by what it tells about the work behind it.
//!
//! Classification ([`Reply`]) is the point of this module:
//! - 2xx: done; 4xx other than 429: refused (a `card_error` is a decline);
//! - 429: not processed (Stripe's rate limiter refuses before anything runs, and keeps no
//!   answer for the key): the same request may be sent again later;
//! - 5xx: Stripe finished the request with an error and keeps that answer for the key
//!   (a retry with the key gets the same 5xx, with `Idempotent-Replayed: true`): the work
//!   may or may not have been done;
//! - no answer after the request left (a timeout, a connection cut): nothing is known;
//! - a connection that never opened: nothing was sent.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use crate::money::Money;

/// The API version every request pins, so that Stripe's answers keep the shape this module
/// reads whatever the account's default version is.
pub const VERSION: &str = "2024-06-20";

/// What a Stripe error says (`{"error": {...}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
    /// A card error on a PaymentIntent carries the PaymentIntent as it now stands.
    pub payment_intent: Option<Value>,
}

impl ApiError {
    pub fn describe(&self) -> String {
        let code = self.decline_code.as_deref().or(self.code.as_deref()).unwrap_or(&self.kind);
        match &self.message {
            Some(m) => format!("{code}: {m}"),
            None => code.to_string(),
        }
    }
}

/// One answer from Stripe, by what it tells about the work.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    /// A 4xx other than 429.
    Refused {
        status: u16,
        error: ApiError,
    },
    /// 429: not processed.
    RateLimited,
    /// 5xx: finished with an error; `replayed` when it is the stored answer of the key.
    ServerError {
        status: u16,
        replayed: bool,
    },
    /// Sent, and no answer (timeout, connection lost, unreadable body).
    Lost(String),
    /// Never sent (the connection could not be opened).
    Unsent(String),
}

/// The HTTP client with the account's key.
pub struct Api {
    client: reqwest::Client,
    base: String,
    secret: String,
}

impl Api {
    /// `timeout`: the longest wait for one request.
    pub fn new(base: &str, secret: &str, timeout: Duration) -> Result<Api, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the Stripe HTTP client: {e}"))?;
        Ok(Api { client, base: base.trim_end_matches('/').to_string(), secret: secret.to_string() })
    }

    /// `POST path` with a form body and an idempotency key.
    pub async fn post(&self, path: &str, params: &[(&str, String)], key: &str) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Idempotency-Key", key)
            .body(body);
        self.send(rb).await
    }

    /// `GET path?query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Reply {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            url = format!("{url}?{q}");
        }
        self.send(self.client.get(url)).await
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let rb = rb.bearer_auth(&self.secret).header("Stripe-Version", VERSION);
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Reply::Unsent(e.to_string()),
            Err(e) => return Reply::Lost(e.to_string()),
        };
        let status = resp.status();
        let replayed = resp.headers().get("idempotent-replayed").is_some_and(|v| v.as_bytes() == b"true");
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Reply::RateLimited;
        }
        if status.is_server_error() {
            return Reply::ServerError { status: status.as_u16(), replayed };
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Reply::Lost(format!("reading the answer: {e}")),
        };
        let json: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) if status.is_success() => return Reply::Lost(format!("an unreadable answer: {e}")),
            Err(_) => Value::Null,
        };
        if status.is_success() {
            return Reply::Ok(json);
        }
        let error = serde_json::from_value::<ApiError>(json["error"].clone()).unwrap_or_else(|_| ApiError {
            kind: "api_error".into(),
            message: Some(format!("HTTP {status}")),
            ..ApiError::default()
        });
        Reply::Refused { status: status.as_u16(), error }
    }
}

/// Currencies Stripe counts in whole units (no cents).
const ZERO_DECIMAL: &[&str] =
    &["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"];

fn minor_factor(currency: &str) -> Decimal {
    if ZERO_DECIMAL.contains(&currency.to_ascii_uppercase().as_str()) {
        Decimal::ONE
    } else {
        Decimal::ONE_HUNDRED
    }
}

/// An amount in Stripe's minor units (cents). Stripe charges whole cents: an amount with a
/// fraction of a cent is refused, never rounded.
pub fn minor_units(amount: Money, currency: &str) -> Result<i64, String> {
    let minor = amount.as_decimal() * minor_factor(currency);
    if !minor.fract().is_zero() {
        let unit = if minor_factor(currency) == Decimal::ONE { "whole units" } else { "whole cents" };
        return Err(format!("Stripe charges {unit}: {amount} {currency} is not a whole number of them"));
    }
    minor.to_i64().ok_or_else(|| format!("{amount} {currency} is too large for Stripe"))
}

/// Minor units back to money.
pub fn from_minor(minor: i64, currency: &str) -> Money {
    Money::from_db(Decimal::from(minor) / minor_factor(currency))
}

/// Stripe spells currencies in lower case.
pub fn currency(c: &str) -> String {
    c.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn cents_exactly_or_not_at_all() {
        assert_eq!(minor_units(m("12.50"), "USD"), Ok(1250));
        assert_eq!(minor_units(m("10000"), "usd"), Ok(1_000_000));
        assert_eq!(minor_units(m("0.01"), "USD"), Ok(1));
        assert!(minor_units(m("12.345"), "USD").unwrap_err().contains("whole cents"));
        assert!(minor_units(m("0.000001"), "USD").is_err());
        assert_eq!(minor_units(m("500"), "JPY"), Ok(500));
        assert!(minor_units(m("500.5"), "JPY").unwrap_err().contains("whole units"));
        assert_eq!(from_minor(1250, "usd"), m("12.5"));
        assert_eq!(from_minor(500, "JPY"), m("500"));
        assert_eq!(currency("USD"), "usd");
    }

    #[test]
    fn errors_describe_their_decline_code_first() {
        let e = ApiError {
            kind: "card_error".into(),
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: Some("Your card has insufficient funds.".into()),
            payment_intent: None,
        };
        assert_eq!(e.describe(), "insufficient_funds: Your card has insufficient funds.");
    }
}

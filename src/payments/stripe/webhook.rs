//! Stripe's webhook events: the signature first, then the meaning.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: each v1 is HMAC-SHA256, keyed
//! by the endpoint's signing secret (`whsec_…`, used whole as the key), over
//! `<t>.<raw body>`. A delivery verifies when one v1 matches (compared in constant time) and
//! `t` is within [`TOLERANCE`] seconds of now, which bounds a replay of a captured delivery;
//! a replay inside that window is caught by the event id (the service keeps the ids it has
//! seen). Other schemes (v0) are ignored, as Stripe's own libraries do.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::api::{self, ApiError};
use super::intents;
use crate::payments::{ChargeOutcome, Event, ProviderEvent};

/// Seconds a signed delivery stays valid (Stripe's libraries use the same default).
pub const TOLERANCE: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is malformed (t=…,v1=… expected)")]
    Malformed,
    #[error("no v1 signature matches the payload")]
    Mismatch,
    #[error("the signature's timestamp is outside the {TOLERANCE}-second tolerance")]
    Stale,
}

/// Verifies one delivery. `now`: unix seconds.
pub fn verify(secret: &str, header: &str, payload: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.split_once('=').ok_or(SignatureError::Malformed)?;
        match k.trim() {
            "t" => timestamp = Some(v.trim()),
            "v1" => signatures.push(v.trim()),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    let seconds: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let matches = signatures.iter().filter_map(|s| hex::decode(s).ok()).any(|sig| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(payload);
        // verify_slice compares in constant time.
        mac.verify_slice(&sig).is_ok()
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if (now - seconds).abs() > TOLERANCE {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// The `Stripe-Signature` header for `payload` at `t` (what Stripe sends; for tests and tools).
pub fn sign(secret: &str, payload: &[u8], t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: Value,
}

fn uuid_of(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// Reads a verified payload.
pub fn parse(payload: &[u8]) -> Result<Event, String> {
    let raw: RawEvent = serde_json::from_slice(payload).map_err(|e| format!("not a Stripe event: {e}"))?;
    let o = &raw.data.object;
    let string = |v: &Value| v.as_str().map(str::to_string);
    let currency = o["currency"].as_str().unwrap_or_default().to_ascii_uppercase();
    let body = match raw.kind.as_str() {
        "payment_intent.succeeded" => match string(&o["id"]) {
            Some(intent) => ProviderEvent::PaymentSucceeded {
                intent,
                tenant: uuid_of(&o["metadata"]["tally_tenant_id"]),
                top_up: uuid_of(&o["metadata"]["tally_top_up_id"]),
                amount: api::from_minor(o["amount_received"].as_i64().or(o["amount"].as_i64()).unwrap_or(0), &currency),
                currency,
            },
            None => ProviderEvent::Ignored,
        },
        "payment_intent.payment_failed" => {
            let error = serde_json::from_value::<ApiError>(o["last_payment_error"].clone()).unwrap_or_default();
            let (reason, code) = match intents::card_failure(&error) {
                ChargeOutcome::Declined { reason, code } => (reason, code),
                other => (format!("{other:?}"), None),
            };
            match string(&o["id"]) {
                Some(intent) => ProviderEvent::PaymentFailed {
                    intent,
                    tenant: uuid_of(&o["metadata"]["tally_tenant_id"]),
                    top_up: uuid_of(&o["metadata"]["tally_top_up_id"]),
                    reason,
                    code,
                },
                None => ProviderEvent::Ignored,
            }
        }
        "charge.refunded" => match string(&o["payment_intent"]) {
            Some(intent) => ProviderEvent::Refunded { intent },
            None => ProviderEvent::Ignored,
        },
        "charge.dispute.created" => match (string(&o["id"]), string(&o["payment_intent"])) {
            (Some(dispute), Some(intent)) => ProviderEvent::Disputed {
                dispute,
                intent,
                amount: api::from_minor(o["amount"].as_i64().unwrap_or(0), &currency),
                currency,
                reason: o["reason"].as_str().unwrap_or("dispute").to_string(),
            },
            _ => ProviderEvent::Ignored,
        },
        _ => ProviderEvent::Ignored,
    };
    Ok(Event { id: raw.id, kind: raw.kind, body })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn a_signature_verifies_only_for_its_payload_secret_and_time() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let header = sign(SECRET, body, now);
        assert_eq!(verify(SECRET, &header, body, now), Ok(()));
        assert_eq!(verify(SECRET, &header, body, now + TOLERANCE), Ok(()));
        assert_eq!(verify(SECRET, &header, br#"{"id":"evt_2"}"#, now), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_other", &header, body, now), Err(SignatureError::Mismatch));
        assert_eq!(verify(SECRET, &header, body, now + TOLERANCE + 1), Err(SignatureError::Stale));
        // One matching v1 among several is enough (Stripe sends two while a secret rolls).
        let current = sign(SECRET, body, now);
        let two = format!("{},v1={}", sign("whsec_old", body, now), current.split("v1=").nth(1).unwrap());
        assert_eq!(verify(SECRET, &two, body, now), Ok(()));
        for bad in ["", "t=abc,v1=00", "v1=00", "t=1700000000", "garbage"] {
            assert_eq!(verify(SECRET, bad, body, now), Err(SignatureError::Malformed), "{bad}");
        }
        assert_eq!(verify(SECRET, &format!("t={now},v0=abc"), body, now), Err(SignatureError::Malformed));
    }

    #[test]
    fn events_are_read_in_the_services_words() {
        let t = Uuid::now_v7();
        let ev = |kind: &str, object: Value| {
            serde_json::to_vec(&json!({ "id": "evt_9", "type": kind, "data": { "object": object } })).unwrap()
        };
        let ok = parse(&ev(
            "payment_intent.succeeded",
            json!({ "id": "pi_1", "amount": 5000, "amount_received": 5000, "currency": "usd", "metadata": { "tally_top_up_id": t.to_string() } }),
        ))
        .unwrap();
        assert_eq!(ok.id, "evt_9");
        assert!(
            matches!(ok.body, ProviderEvent::PaymentSucceeded { ref intent, top_up: Some(u), ref currency, amount, .. }
            if intent == "pi_1" && u == t && currency == "USD" && amount == "50".parse().unwrap())
        );
        let dispute = parse(&ev(
            "charge.dispute.created",
            json!({ "id": "dp_1", "amount": 1234, "currency": "usd", "payment_intent": "pi_1", "reason": "fraudulent" }),
        ))
        .unwrap();
        assert!(matches!(dispute.body, ProviderEvent::Disputed { amount, .. } if amount == "12.34".parse().unwrap()));
        assert_eq!(parse(&ev("customer.created", json!({ "id": "cus_1" }))).unwrap().body, ProviderEvent::Ignored);
        assert!(parse(b"not json").is_err());
    }
}

//! Refunds of a top-up's PaymentIntent (`POST /v1/refunds`), and the refunds Stripe lists
//! for one (for `charge.refunded` events).
//!
//! Exactly once: the refund's key (committed with the `pending` refund row before the call)
//! is the Idempotency-Key; a call after a lost answer first looks for the refund among the
//! PaymentIntent's refunds by the Tally refund id in its metadata, and a key whose stored
//! answer is a 5xx is followed by the next key of its chain only once that list shows no
//! such refund. A refund may be made twice only if Stripe's own list lied.

use serde_json::Value;
use uuid::Uuid;

use super::api::{self, Api, Reply};
use super::{chain_key, CHAIN};
use crate::payments::{ChargeOutcome, ProviderRefund, RefundOutcome, RefundRequest};

pub async fn refund(api: &Api, req: &RefundRequest) -> RefundOutcome {
    let cents = match api::minor_units(req.amount, &req.currency) {
        Ok(c) => c,
        Err(e) => return ChargeOutcome::Declined { reason: e, code: None },
    };
    if req.try_no > 1 {
        match find(api, &req.payment_ref, req.refund_id).await {
            Ok(Some(r)) => return outcome_of(&r),
            Ok(None) => {}
            Err(e) => return ChargeOutcome::Unknown { reason: e },
        }
    }
    let reason: String = req.reason.chars().take(400).collect();
    let params = [
        ("payment_intent", req.payment_ref.clone()),
        ("amount", cents.to_string()),
        ("reason", "requested_by_customer".to_string()),
        ("metadata[tally_refund_id]", req.refund_id.to_string()),
        ("metadata[tally_top_up_id]", req.top_up_id.to_string()),
        ("metadata[tally_tenant_id]", req.tenant_id.to_string()),
        ("metadata[tally_reason]", reason),
    ];
    for n in 0..CHAIN {
        let reply = api.post("/v1/refunds", &params, &chain_key(&req.idempotency_key, n)).await;
        match reply {
            Reply::Ok(r) => return outcome_of(&r),
            Reply::ServerError { status, .. } => match find(api, &req.payment_ref, req.refund_id).await {
                Ok(Some(r)) => return outcome_of(&r),
                Ok(None) => tracing::warn!(refund = %req.refund_id, status, "Stripe failed a refund and made none"),
                Err(e) => return ChargeOutcome::Unknown { reason: e },
            },
            Reply::RateLimited | Reply::Unsent(_) | Reply::Refused { status: 401 | 403, .. } => {
                return ChargeOutcome::Unavailable { reason: format!("refunding: {reply:?}") }
            }
            Reply::Refused { ref error, .. } if error.kind == "idempotency_error" => {
                return ChargeOutcome::Unknown { reason: "a refund with this key is still running at Stripe".into() }
            }
            Reply::Refused { error, .. } => {
                return ChargeOutcome::Declined { reason: error.describe(), code: error.code.clone() }
            }
            Reply::Lost(e) => return ChargeOutcome::Unknown { reason: format!("refunding: no answer ({e})") },
        }
    }
    ChargeOutcome::Unavailable { reason: "Stripe kept failing the refund and made none".into() }
}

/// A refund object's meaning: accepted (succeeded, or pending on the card network) or not.
fn outcome_of(r: &Value) -> RefundOutcome {
    let id = r["id"].as_str().unwrap_or_default().to_string();
    match r["status"].as_str() {
        Some("failed" | "canceled") => ChargeOutcome::Declined {
            reason: format!("refund {id} {}", r["failure_reason"].as_str().unwrap_or("failed")),
            code: r["failure_reason"].as_str().map(str::to_string),
        },
        _ => ChargeOutcome::Succeeded { provider_ref: id },
    }
}

async fn page_of(api: &Api, payment_intent: &str) -> Result<Vec<Value>, String> {
    let query = [("payment_intent", payment_intent.to_string()), ("limit", "100".to_string())];
    match api.get("/v1/refunds", &query).await {
        Reply::Ok(page) => Ok(page["data"].as_array().cloned().unwrap_or_default()),
        other => Err(format!("listing the refunds of {payment_intent}: {other:?}")),
    }
}

/// The refund Tally made as `refund_id`, if Stripe has it.
async fn find(api: &Api, payment_intent: &str, refund_id: Uuid) -> Result<Option<Value>, String> {
    let id = refund_id.to_string();
    Ok(page_of(api, payment_intent).await?.into_iter().find(|r| r["metadata"]["tally_refund_id"].as_str() == Some(&id)))
}

/// Every refund of a PaymentIntent (a card payment has few: one page).
pub async fn list(api: &Api, payment_intent: &str) -> Result<Vec<ProviderRefund>, String> {
    Ok(page_of(api, payment_intent)
        .await?
        .iter()
        .map(|r| ProviderRefund {
            id: r["id"].as_str().unwrap_or_default().to_string(),
            amount: api::from_minor(r["amount"].as_i64().unwrap_or_default(), r["currency"].as_str().unwrap_or("usd")),
            accepted: matches!(outcome_of(r), ChargeOutcome::Succeeded { .. }),
            tally_refund_id: r["metadata"]["tally_refund_id"].as_str().and_then(|s| s.parse().ok()),
        })
        .collect())
}

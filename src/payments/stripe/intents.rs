//! One off-session payment of one top-up attempt, as PaymentIntents.
//!
//! The protocol (Stripe keeps the first answer to an Idempotency-Key, a 500 included, so
//! after a lost answer the same key never says more):
//! 1. the attempt's PaymentIntent: the one recorded by an earlier call (retrieved, its
//!    status is the truth), or one found among the customer's PaymentIntents by the
//!    attempt id in its metadata (an earlier create whose answer was lost), or a new one,
//!    created UNCONFIRMED (`confirm=false`) with the attempt's key — an unconfirmed
//!    PaymentIntent charges nothing;
//! 2. the service records its id (a committed write, [`Journal`]) — no id, no confirm;
//! 3. confirm it by id (`off_session=true`) with a key of its own for this call
//!    (`<key>-confirm-<n>`): a PaymentIntent succeeds at most once, so confirming the one
//!    recorded PaymentIntent again can never charge twice, whereas creating a second one
//!    could;
//! 4. a lost confirm answer (5xx, timeout, network error) is settled at once by retrieving
//!    the PaymentIntent; if that fails too the outcome is `Unknown` and the attempt is
//!    re-driven (or settled by the `payment_intent.*` webhook), never abandoned.
//!
//! Statuses: `succeeded` → succeeded; `requires_payment_method` after a card error →
//! declined with its `decline_code`; `requires_action` or an `authentication_required`
//! error → declined with reason `authentication_required` (3-D Secure cannot happen
//! off-session); `processing` → unknown until Stripe settles it; 429 → unavailable.

use serde_json::Value;

use super::api::{self, Api, ApiError, Reply};
use super::{chain_key, CHAIN};
use crate::payments::{ChargeOutcome, ChargeRequest, Journal, AUTHENTICATION_REQUIRED};

/// Pages of the customer's PaymentIntents looked through for the attempt's own.
const LIST_PAGES: usize = 5;

pub async fn charge(api: &Api, req: &ChargeRequest, journal: &dyn Journal) -> ChargeOutcome {
    let Some(customer) = req.customer.as_deref() else {
        return declined("the card on file is not attached to the tenant's Stripe customer: set it again", None);
    };
    let cents = match api::minor_units(req.amount, &req.currency) {
        Ok(c) => c,
        Err(e) => return declined(&e, None),
    };
    let pi = match &req.intent {
        Some(id) => match retrieve(api, id).await {
            Ok(pi) => pi,
            Err(outcome) => return outcome,
        },
        None => {
            let pi = match find_or_create(api, req, customer, cents).await {
                Ok(pi) => pi,
                Err(outcome) => return outcome,
            };
            if let Err(e) = journal.record_intent(id_of(&pi)).await {
                // Not recorded, not confirmed: nothing is charged, and the next call finds it.
                return ChargeOutcome::Unavailable {
                    reason: format!("PaymentIntent {} not recorded before its confirmation: {e}", id_of(&pi)),
                };
            }
            pi
        }
    };
    if let Err(why) = belongs(&pi, req, customer, cents) {
        tracing::error!(attempt = %req.attempt_id, intent = id_of(&pi), why, "a PaymentIntent that is not the attempt's");
        return declined(&why, None);
    }
    match pi["status"].as_str() {
        Some("requires_confirmation") => confirm(api, req, id_of(&pi)).await,
        _ => outcome_of(&pi, true),
    }
}

fn id_of(pi: &Value) -> &str {
    pi["id"].as_str().unwrap_or_default()
}

fn declined(reason: &str, code: Option<String>) -> ChargeOutcome {
    ChargeOutcome::Declined { reason: reason.to_string(), code }
}

/// The PaymentIntent is the attempt's: its customer, amount, currency and metadata.
fn belongs(pi: &Value, req: &ChargeRequest, customer: &str, cents: i64) -> Result<(), String> {
    let same = pi["customer"].as_str() == Some(customer)
        && pi["amount"].as_i64() == Some(cents)
        && pi["currency"].as_str() == Some(api::currency(&req.currency).as_str())
        && pi["metadata"]["tally_top_up_id"].as_str() == Some(req.attempt_id.to_string().as_str());
    if same {
        Ok(())
    } else {
        Err(format!("PaymentIntent {} does not match the attempt (customer, amount, currency or metadata)", id_of(pi)))
    }
}

/// The attempt's PaymentIntent by id. Any failure leaves the outcome unknown: the id was
/// recorded because the PaymentIntent may be confirmed.
async fn retrieve(api: &Api, id: &str) -> Result<Value, ChargeOutcome> {
    match api.get(&format!("/v1/payment_intents/{id}"), &[]).await {
        Reply::Ok(pi) => Ok(pi),
        other => Err(ChargeOutcome::Unknown { reason: format!("retrieving PaymentIntent {id}: {}", what(&other)) }),
    }
}

/// A lost answer's words, for logs and the attempt's `error`.
fn what(reply: &Reply) -> String {
    match reply {
        Reply::Ok(_) => "answered".into(),
        Reply::Refused { status, error } => format!("HTTP {status} {}", error.describe()),
        Reply::RateLimited => "rate limited (429), not processed".into(),
        Reply::ServerError { status, replayed } => {
            format!("HTTP {status}{}", if *replayed { " (the key's stored answer)" } else { "" })
        }
        Reply::Lost(e) => format!("no answer: {e}"),
        Reply::Unsent(e) => format!("not sent: {e}"),
    }
}

/// Step 1 for an attempt with no recorded PaymentIntent.
async fn find_or_create(api: &Api, req: &ChargeRequest, customer: &str, cents: i64) -> Result<Value, ChargeOutcome> {
    // A first call has nothing to find; any later one may follow a create whose answer was lost.
    if req.try_no > 1 {
        if let Some(pi) = find(api, customer, req).await? {
            return Ok(pi);
        }
    }
    let attempt = req.attempt_id.to_string();
    let params = [
        ("amount", cents.to_string()),
        ("currency", api::currency(&req.currency)),
        ("customer", customer.to_string()),
        ("payment_method", req.token.clone()),
        ("payment_method_types[0]", "card".to_string()),
        ("confirm", "false".to_string()),
        ("description", req.description.clone()),
        ("metadata[tally_top_up_id]", attempt),
        ("metadata[tally_tenant_id]", req.tenant_id.to_string()),
    ];
    for n in 0..CHAIN {
        let reply = api.post("/v1/payment_intents", &params, &chain_key(&req.idempotency_key, n)).await;
        match reply {
            Reply::Ok(pi) => return Ok(pi),
            Reply::ServerError { .. } => {
                // Finished with an error that this key keeps: Stripe's list says whether it
                // left a PaymentIntent; if not, the next key of the chain asks again.
                if let Some(pi) = find(api, customer, req).await? {
                    return Ok(pi);
                }
            }
            Reply::Refused { status: 401 | 403, .. } | Reply::RateLimited | Reply::Unsent(_) => {
                return Err(ChargeOutcome::Unavailable {
                    reason: format!("creating the PaymentIntent: {}", what(&reply)),
                })
            }
            Reply::Refused { ref error, .. } if error.kind == "idempotency_error" => {
                // The same create is still running at Stripe: the next call finds its result.
                return Err(ChargeOutcome::Unavailable {
                    reason: format!("creating the PaymentIntent: {}", what(&reply)),
                });
            }
            Reply::Refused { error, .. } => return Err(declined(&error.describe(), error.code.clone())),
            Reply::Lost(_) => {
                // Unconfirmed whatever happened: nothing is charged, the next call finds it.
                return Err(ChargeOutcome::Unavailable {
                    reason: format!("creating the PaymentIntent: {}", what(&reply)),
                });
            }
        }
    }
    Err(ChargeOutcome::Unavailable { reason: "Stripe kept failing to create the PaymentIntent".into() })
}

/// The attempt's PaymentIntent among the customer's (Stripe's list is consistent, unlike its
/// search). Several (a create raced a lost one): the one furthest along, else the oldest.
async fn find(api: &Api, customer: &str, req: &ChargeRequest) -> Result<Option<Value>, ChargeOutcome> {
    let attempt = req.attempt_id.to_string();
    let mut found: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..LIST_PAGES {
        let mut query = vec![("customer", customer.to_string()), ("limit", "100".to_string())];
        if let Some(a) = &after {
            query.push(("starting_after", a.clone()));
        }
        let page = match api.get("/v1/payment_intents", &query).await {
            Reply::Ok(page) => page,
            other => {
                // Nothing of this attempt is confirmed without being recorded: still nothing charged.
                return Err(ChargeOutcome::Unavailable { reason: format!("listing PaymentIntents: {}", what(&other)) });
            }
        };
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|p| p["id"].as_str()).map(str::to_string);
        found.extend(data.into_iter().filter(|p| p["metadata"]["tally_top_up_id"].as_str() == Some(attempt.as_str())));
        if !page["has_more"].as_bool().unwrap_or(false) || after.is_none() {
            break;
        }
    }
    let rank = |p: &Value| match p["status"].as_str() {
        Some("succeeded") => 0,
        Some("processing") => 1,
        Some("requires_action" | "requires_payment_method") => 2,
        Some("requires_confirmation") => 3,
        _ => 4,
    };
    // The list is newest first: reversed, a stable sort keeps the oldest first within a rank.
    found.reverse();
    found.sort_by_key(rank);
    Ok(found.into_iter().next())
}

/// Step 3, then step 4 when the answer is lost.
async fn confirm(api: &Api, req: &ChargeRequest, id: &str) -> ChargeOutcome {
    let key = format!("{}-confirm-{}", req.idempotency_key, req.try_no);
    let reply = api.post(&format!("/v1/payment_intents/{id}/confirm"), &[("off_session", "true".into())], &key).await;
    match reply {
        Reply::Ok(pi) => outcome_of(&pi, true),
        Reply::Refused { ref error, .. } if error.kind == "card_error" => card_failure(error),
        // Refused otherwise (e.g. `payment_intent_unexpected_state`: an earlier confirm went
        // through): the PaymentIntent's status says what happened.
        Reply::Refused { .. } | Reply::ServerError { .. } => settle(api, id, true, &what(&reply)).await,
        Reply::RateLimited | Reply::Unsent(_) => {
            ChargeOutcome::Unavailable { reason: format!("confirming PaymentIntent {id}: {}", what(&reply)) }
        }
        Reply::Lost(_) => settle(api, id, false, &what(&reply)).await,
    }
}

/// Retrieves the PaymentIntent after a lost confirm answer. `finished`: Stripe finished the
/// request (a 4xx or 5xx came back), so a PaymentIntent still awaiting confirmation was not
/// confirmed; after a timeout it may still be in progress.
async fn settle(api: &Api, id: &str, finished: bool, why: &str) -> ChargeOutcome {
    tracing::warn!(intent = id, why, "the answer to a confirmation was lost: retrieving the PaymentIntent");
    match retrieve(api, id).await {
        Ok(pi) => outcome_of(&pi, finished),
        Err(outcome) => outcome,
    }
}

/// What a PaymentIntent's status means for the attempt. `finished`: no confirmation of it
/// can still be in progress.
pub fn outcome_of(pi: &Value, finished: bool) -> ChargeOutcome {
    let id = id_of(pi);
    match pi["status"].as_str().unwrap_or_default() {
        "succeeded" => ChargeOutcome::Succeeded { provider_ref: id.to_string() },
        "requires_action" => authentication_required(),
        "requires_payment_method" => match serde_json::from_value::<ApiError>(pi["last_payment_error"].clone()) {
            Ok(e) => card_failure(&e),
            Err(_) => declined("the PaymentIntent has no usable payment method", None),
        },
        "canceled" => declined("the PaymentIntent was canceled", Some("canceled".into())),
        "requires_confirmation" if finished => {
            ChargeOutcome::Unavailable { reason: format!("PaymentIntent {id} was not confirmed") }
        }
        status => ChargeOutcome::Unknown {
            reason: format!("PaymentIntent {id} is {status}: Stripe's webhook or a later retrieve settles it"),
        },
    }
}

fn authentication_required() -> ChargeOutcome {
    declined(
        "authentication_required: the card asks for authentication (3-D Secure), which an off-session top-up cannot \
         give; the tenant needs another card, or to pay with this one while present",
        Some(AUTHENTICATION_REQUIRED.into()),
    )
}

/// A card error: declined with its decline code, or authentication required.
pub fn card_failure(e: &ApiError) -> ChargeOutcome {
    let auth = [e.code.as_deref(), e.decline_code.as_deref()].contains(&Some(AUTHENTICATION_REQUIRED));
    if auth {
        return authentication_required();
    }
    declined(&e.describe(), e.decline_code.clone().or_else(|| e.code.clone()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        let pi = |status: &str, err: Value| json!({ "id": "pi_1", "status": status, "last_payment_error": err });
        assert_eq!(
            outcome_of(&pi("succeeded", Value::Null), true),
            ChargeOutcome::Succeeded { provider_ref: "pi_1".into() }
        );
        let declined = outcome_of(
            &pi(
                "requires_payment_method",
                json!({ "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "no" }),
            ),
            true,
        );
        assert!(matches!(declined, ChargeOutcome::Declined { code: Some(ref c), .. } if c == "insufficient_funds"));
        let auth = outcome_of(
            &pi("requires_payment_method", json!({ "type": "card_error", "code": "authentication_required" })),
            true,
        );
        assert!(
            matches!(auth, ChargeOutcome::Declined { code: Some(ref c), ref reason } if c == AUTHENTICATION_REQUIRED && reason.starts_with("authentication_required"))
        );
        assert!(
            matches!(outcome_of(&pi("requires_action", Value::Null), true), ChargeOutcome::Declined { code: Some(ref c), .. } if c == AUTHENTICATION_REQUIRED)
        );
        assert!(matches!(outcome_of(&pi("processing", Value::Null), true), ChargeOutcome::Unknown { .. }));
        assert!(matches!(
            outcome_of(&pi("requires_confirmation", Value::Null), true),
            ChargeOutcome::Unavailable { .. }
        ));
        assert!(matches!(outcome_of(&pi("requires_confirmation", Value::Null), false), ChargeOutcome::Unknown { .. }));
    }
}

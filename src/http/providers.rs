//! Payment providers' webhooks: `POST /v1/providers/stripe/webhook`.
//!
//! No bearer token: the `Stripe-Signature` header is the credential, verified (against
//! `STRIPE_WEBHOOK_SECRET`, with a 300-second tolerance) before anything in the body is
//! read; a delivery that does not verify is a 400. A verified event is acknowledged with
//! 200 once handled (an unknown or duplicate one too); a failure to handle it is a 5xx, and
//! Stripe delivers it again. The route is a 404 when Stripe is not the provider.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::JsonResponse;
use crate::error::{AppError, AppResult};
use crate::services::money_in::provider_events;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/providers/stripe/webhook", tag = "top-ups", security(()),
    request_body(content = Object, description = "A Stripe event, signed in the Stripe-Signature header"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<HMAC-SHA256 hex>")),
    responses((status = 200, description = "received (handled, or acknowledged and ignored)"),
              (status = 400, description = "the signature does not verify"),
              (status = 404, description = "Stripe is not the payment provider")))]
pub async fn stripe_webhook(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> AppResult<Response> {
    let Some(stripe) = s.stripe.as_ref() else { return Err(AppError::NotFound) };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let event = stripe
        .verify_event(signature, &body, chrono::Utc::now().timestamp())
        .map_err(|e| AppError::invalid(format!("Stripe-Signature: {e}")))?;
    let outcome = provider_events::handle(&s.money_in, "stripe", event).await?;
    Ok(JsonResponse(StatusCode::OK, json!({ "received": true, "outcome": outcome })).into_response())
}
